//! Argv templates: `{port}`-style placeholders inside config-given arguments, parsed once, expanded per upload.
//!
//! Each template element expands to exactly one argument (no splitting, no
//! shell). `{{` and `}}` stand for literal braces. The program (`argv[0]`)
//! may not contain a placeholder: only config decides what runs.

use rerod_devices::OptionError;

/// A value a template can refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// The serial port path.
    Port,
    /// The temp file holding the firmware (.hex or .bin per `format`).
    Firmware,
    /// The bootloader baud rate.
    Baud,
    /// The MCU (avrdude part id), from the `mcu` option or the model.
    Mcu,
    /// The device's model name.
    Model,
    /// The firmware's start address in hex (`0x0`), for tools that take one (esptool).
    Address,
}

impl Var {
    const ALL: [(&'static str, Var); 6] = [
        ("port", Var::Port),
        ("firmware", Var::Firmware),
        ("baud", Var::Baud),
        ("mcu", Var::Mcu),
        ("model", Var::Model),
        ("address", Var::Address),
    ];

    fn from_name(name: &str) -> Option<Var> {
        Var::ALL.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(Var),
}

/// A parsed argv template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    args: Vec<Vec<Piece>>,
}

/// The values for one upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Values {
    pub port: String,
    pub firmware: String,
    pub baud: String,
    pub mcu: String,
    pub model: String,
    pub address: String,
}

impl Template {
    /// Parses `argv`; errors are keyed `argv` or `argv[i]`.
    pub fn parse(argv: &[&str]) -> Result<Template, Vec<OptionError>> {
        let mut errors = Vec::new();
        if argv.is_empty() {
            errors.push(OptionError::new("argv", "must name at least the program to run"));
        }
        let mut args = Vec::with_capacity(argv.len());
        for (i, arg) in argv.iter().enumerate() {
            let key = format!("argv[{i}]");
            match parse_arg(arg) {
                Ok(pieces) => {
                    if i == 0 && (arg.is_empty() || pieces.iter().any(|p| matches!(p, Piece::Var(_)))) {
                        errors.push(OptionError::new(
                            key,
                            "the program must be a fixed name or path, without placeholders",
                        ));
                    }
                    args.push(pieces);
                }
                Err(message) => errors.push(OptionError::new(key, message)),
            }
        }
        if errors.is_empty() { Ok(Template { args }) } else { Err(errors) }
    }

    pub fn uses(&self, var: Var) -> bool {
        self.args.iter().flatten().any(|p| *p == Piece::Var(var))
    }

    /// The argv for one upload; never empty (parse refuses an empty template).
    pub fn expand(&self, values: &Values) -> Vec<String> {
        self.args
            .iter()
            .map(|pieces| {
                pieces
                    .iter()
                    .map(|p| match p {
                        Piece::Text(t) => t.as_str(),
                        Piece::Var(Var::Port) => &values.port,
                        Piece::Var(Var::Firmware) => &values.firmware,
                        Piece::Var(Var::Baud) => &values.baud,
                        Piece::Var(Var::Mcu) => &values.mcu,
                        Piece::Var(Var::Model) => &values.model,
                        Piece::Var(Var::Address) => &values.address,
                    })
                    .collect()
            })
            .collect()
    }
}

fn parse_arg(arg: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = arg.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let mut name = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '}' {
                        closed = true;
                        break;
                    }
                    name.push(c);
                }
                if !closed {
                    return Err(format!("unterminated placeholder {{{name} (write {{{{ for a literal brace)"));
                }
                let var = Var::from_name(&name).ok_or_else(|| {
                    let known: Vec<String> = Var::ALL.iter().map(|(n, _)| format!("{{{n}}}")).collect();
                    format!(
                        "unknown placeholder {{{name}}} (known: {}; write {{{{ for a literal brace)",
                        known.join(", ")
                    )
                })?;
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Var(var));
            }
            '}' => return Err("unmatched '}' (write }} for a literal brace)".into()),
            c => text.push(c),
        }
    }
    if !text.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values {
        Values {
            port: "/dev/ttyACM0".into(),
            firmware: "/tmp/rerod-upload-1/firmware.hex".into(),
            baud: "115200".into(),
            mcu: "m328p".into(),
            model: "uno".into(),
            address: "0x0".into(),
        }
    }

    #[test]
    fn expands_each_element_to_one_argument() {
        let t =
            Template::parse(&["avrdude", "-p", "{mcu}", "-P", "{port}", "-b", "{baud}", "-U", "flash:w:{firmware}:i"])
                .expect("valid");
        assert_eq!(
            t.expand(&values()),
            [
                "avrdude",
                "-p",
                "m328p",
                "-P",
                "/dev/ttyACM0",
                "-b",
                "115200",
                "-U",
                "flash:w:/tmp/rerod-upload-1/firmware.hex:i"
            ]
        );
        assert!(t.uses(Var::Mcu) && !t.uses(Var::Address));
    }

    #[test]
    fn values_with_spaces_or_shell_syntax_stay_one_argument() {
        let t = Template::parse(&["tool", "{port}"]).expect("valid");
        let v = Values { port: "/dev/x; rm -rf / $(id)".into(), ..values() };
        assert_eq!(t.expand(&v), ["tool", "/dev/x; rm -rf / $(id)"]);
    }

    #[test]
    fn braces_escape_and_empty_arguments_survive() {
        let t = Template::parse(&["tool", "{{literal}}", "", "{model}-{address}"]).expect("valid");
        assert_eq!(t.expand(&values()), ["tool", "{literal}", "", "uno-0x0"]);
    }

    #[test]
    fn bad_templates_name_the_element() {
        let errors = Template::parse(&["{firmware}", "{prot}", "a}b", "{port"]).expect_err("invalid");
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["argv[0]", "argv[1]", "argv[2]", "argv[3]"]);
        assert!(errors[1].message.contains("{port}"), "lists the known names: {}", errors[1].message);
        assert_eq!(Template::parse(&[]).expect_err("empty")[0].key, "argv");
    }
}
