//! A tool's output: split into lines, streamed as log events, kept (bounded) for the report, read for progress.
//!
//! Lines end at `\n` or `\r` (progress bars redraw with `\r`). Progress comes
//! from avrdude's bar (`Writing | ####  |`, 50 marks = 100 %, drawn without
//! a line end, so it is read from the unfinished line too) or an `NN%` figure;
//! the phase from the line's words. A read before anything is written is
//! the tool checking the chip, not verifying, so Verify is accepted only
//! once Write reached 100 %, and phases never go back.

use std::collections::VecDeque;

use rerod_devices::{Phase, UploadContext};

/// Lines kept for the report; older ones are dropped (an esptool run can print thousands).
const KEEP_LINES: usize = 2000;

#[derive(Debug)]
pub struct ToolOutput {
    partial: Vec<u8>,
    lines: VecDeque<String>,
    dropped: usize,
    phase: Phase,
    percent: u8,
}

impl ToolOutput {
    /// `phase` is where progress starts (Write for a flashing tool).
    pub fn new(phase: Phase) -> ToolOutput {
        ToolOutput { partial: Vec::new(), lines: VecDeque::new(), dropped: 0, phase, percent: 0 }
    }

    pub fn feed(&mut self, bytes: &[u8], ctx: &UploadContext) {
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                self.end_line(ctx);
            } else {
                self.partial.push(b);
            }
        }
        if !self.partial.is_empty() {
            let text = String::from_utf8_lossy(&self.partial).into_owned();
            self.track(&text, ctx);
        }
    }

    /// Ends an unfinished last line.
    pub fn finish(&mut self, ctx: &UploadContext) {
        self.end_line(ctx);
    }

    fn end_line(&mut self, ctx: &UploadContext) {
        if self.partial.is_empty() {
            return;
        }
        let line = String::from_utf8_lossy(&self.partial).trim_end().to_owned();
        self.partial.clear();
        self.track(&line, ctx);
        if line.trim().is_empty() {
            return;
        }
        ctx.log(line.clone());
        if self.lines.len() == KEEP_LINES {
            self.lines.pop_front();
            self.dropped += 1;
        }
        self.lines.push_back(line);
    }

    fn track(&mut self, text: &str, ctx: &UploadContext) {
        let Some((phase, percent)) = progress_in(text) else { return };
        let phase = phase.unwrap_or(self.phase);
        let allowed = match phase.cmp(&self.phase) {
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => percent >= self.percent,
            std::cmp::Ordering::Greater => {
                phase != Phase::Verify || (self.phase == Phase::Write && self.percent == 100)
            }
        };
        if allowed && phase < Phase::Done {
            self.phase = phase;
            self.percent = percent;
            ctx.progress(phase, percent);
        }
    }

    /// Everything kept, one line each.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if self.dropped > 0 {
            out.push_str(&format!("[{} earlier lines not kept]\n", self.dropped));
        }
        for line in &self.lines {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// The last `n` lines, for an error message.
    pub fn tail(&self, n: usize) -> String {
        let skip = self.lines.len().saturating_sub(n);
        self.lines.iter().skip(skip).cloned().collect::<Vec<_>>().join("\n")
    }
}

/// The progress a line shows, if any: (phase named by the line, percent).
fn progress_in(text: &str) -> Option<(Option<Phase>, u8)> {
    let lower = text.to_ascii_lowercase();
    let phase = if ["verif", "read"].iter().any(|w| lower.contains(w)) {
        Some(Phase::Verify)
    } else if ["writ", "flash", "program", "upload", "download", "erase"].iter().any(|w| lower.contains(w)) {
        Some(Phase::Write)
    } else {
        None
    };
    // avrdude: "Writing | ##########...  | 100% 2.95s", the marks drawn one by one.
    if let Some(bar) = text.split('|').nth(1)
        && text.trim_start().starts_with(|c: char| c.is_ascii_alphabetic())
        && bar.chars().all(|c| c == '#' || c == ' ')
        && bar.contains('#')
    {
        let marks = bar.chars().filter(|c| *c == '#').count();
        return Some((phase, (marks * 2).min(100) as u8));
    }
    let percent = last_percent(text)?;
    Some((phase, percent))
}

/// The last "NN%" (or "NN.N %") figure in a line.
fn last_percent(text: &str) -> Option<u8> {
    let bytes = text.as_bytes();
    let mut found = None;
    for (i, _) in text.match_indices('%') {
        let mut end = i;
        while end > 0 && bytes[end - 1] == b' ' {
            end -= 1;
        }
        let mut start = end;
        while start > 0 && (bytes[start - 1].is_ascii_digit() || bytes[start - 1] == b'.') {
            start -= 1;
        }
        if let Ok(value) = text[start..end].parse::<f64>()
            && (0.0..=100.0).contains(&value)
        {
            found = Some(value as u8);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use rerod_devices::testkit::recording_context;
    use rerod_devices::{CancelToken, Progress, UploadEvent};

    fn run(chunks: &[&[u8]]) -> (Vec<UploadEvent>, ToolOutput) {
        let (ctx, events) = recording_context(CancelToken::new());
        let mut out = ToolOutput::new(Phase::Write);
        for chunk in chunks {
            out.feed(chunk, &ctx);
        }
        out.finish(&ctx);
        let events = events.lock().expect("events").clone();
        (events, out)
    }

    fn progress(events: &[UploadEvent]) -> Vec<(Phase, u8)> {
        events
            .iter()
            .filter_map(|e| match e {
                UploadEvent::Progress(Progress { phase, percent }) => Some((*phase, *percent)),
                UploadEvent::Log(_) => None,
            })
            .collect()
    }

    #[test]
    fn avrdude_bars_drawn_mark_by_mark_become_progress() {
        let (events, out) = run(&[
            b"avrdude: AVR device initialized\n\nWriting | ",
            b"#########################",
            b"######################### | 100% 2.95s\n\n",
            b"avrdude: verifying\nReading | #####",
            b"############################################# | 100% 2.80s\n",
            b"avrdude done.  Thank you.",
        ]);
        assert_eq!(
            progress(&events),
            [(Phase::Write, 50), (Phase::Write, 100), (Phase::Verify, 10), (Phase::Verify, 100)]
        );
        assert!(out.text().ends_with("avrdude done.  Thank you.\n"), "{}", out.text());
        assert!(!out.text().contains("\n\n"), "blank lines are not kept");
    }

    #[test]
    fn percent_figures_and_carriage_returns() {
        let (events, out) = run(&[
            b"Writing at 0x00001000... (10 %)\rWriting at 0x00002000... (55 %)\r\n",
            b"Hash of data verified.\n",
        ]);
        assert_eq!(progress(&events), [(Phase::Write, 10), (Phase::Write, 55)]);
        assert_eq!(out.tail(1), "Hash of data verified.");
    }

    #[test]
    fn a_read_before_the_write_is_not_verify() {
        let (events, _) =
            run(&[b"Reading | ################################################## | 100% 0.01s\n", b"Writing 40%\n"]);
        assert_eq!(progress(&events), [(Phase::Write, 40)]);
    }

    #[test]
    fn output_lines_are_streamed_and_bounded() {
        let many: Vec<u8> = (0..KEEP_LINES + 5).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        let (events, out) = run(&[&many]);
        assert_eq!(events.len(), KEEP_LINES + 5);
        assert!(out.text().starts_with("[5 earlier lines not kept]\nline 5\n"));
    }
}
