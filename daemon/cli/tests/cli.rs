//! The `rero` binary as a packager and a shell see it: its version, man page
//! and completions, which the Debian package is built from. (The commands
//! against a running lab are tested in the black-box suite, tests/blackbox/rero.rs.)

use std::process::{Command, Output};

fn rero(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_rero")).args(args).env_clear().output().expect("rero runs");
    assert!(output.status.success(), "rero {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    output
}

fn stdout(args: &[&str]) -> String {
    String::from_utf8(rero(args).stdout).expect("rero prints UTF-8")
}

#[test]
fn says_its_version() {
    assert_eq!(stdout(&["--version"]).trim(), format!("rero {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn prints_its_man_page_in_section_1() {
    let page = stdout(&["man"]);
    assert!(page.contains(".TH rero 1"), "no section 1 header: {}", &page[..page.len().min(200)]);
    for command in ["login", "book", "upload", "console"] {
        assert!(page.contains(command), "the man page does not mention {command}");
    }
}

#[test]
fn prints_completions_for_each_shell() {
    assert!(stdout(&["completions", "bash"]).contains("complete -F _rero"));
    assert!(stdout(&["completions", "zsh"]).starts_with("#compdef rero"));
    assert!(stdout(&["completions", "fish"]).contains("complete -c rero"));
}
