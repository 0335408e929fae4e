// The sketch editor: a textarea with line numbers beside it, and the
// compiler's messages with each `file:line:col: error` linked to its line.

import { h, fill } from './ui.js';

const EXAMPLE = `void setup() {
  Serial.begin(115200);
  Serial.println("hello from my sketch");
}

void loop() {
}
`;

export function editor() {
  const gutter = h('div', { class: 'gutter', 'aria-hidden': 'true' });
  const area = h('textarea', {
    id: 'code', spellcheck: 'false', autocapitalize: 'off', autocomplete: 'off', wrap: 'off', rows: 14,
  });
  area.value = EXAMPLE;
  const numbers = () => {
    const n = area.value.split('\n').length;
    gutter.textContent = Array.from({ length: n }, (_, i) => i + 1).join('\n');
    gutter.scrollTop = area.scrollTop;
  };
  area.addEventListener('input', numbers);
  area.addEventListener('scroll', () => { gutter.scrollTop = area.scrollTop; });
  area.addEventListener('keydown', (e) => {
    // Tab indents; Escape then Tab leaves the editor, so keyboard users are never trapped.
    if (e.key === 'Tab' && !e.shiftKey && !area.dataset.escaped) {
      e.preventDefault();
      area.setRangeText('  ', area.selectionStart, area.selectionEnd, 'end');
      numbers();
    }
    area.dataset.escaped = e.key === 'Escape' ? '1' : '';
  });
  numbers();

  const goTo = (line) => {
    const lines = area.value.split('\n');
    const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
    area.focus();
    area.setSelectionRange(start, start + (lines[line - 1] || '').length);
    const lineHeight = area.scrollHeight / Math.max(lines.length, 1);
    area.scrollTop = Math.max(0, (line - 3) * lineHeight);
  };

  const output = h('pre', { id: 'compile-output', class: 'compile-output', 'aria-live': 'polite' });
  const showOutput = (text) => {
    const parts = [];
    for (const line of text.split('\n')) {
      const m = line.match(/^(.*?):(\d+):(?:(\d+):)?\s*(error|warning|note)?/);
      if (m && m[4]) {
        const n = Number(m[2]);
        parts.push(h('a', { href: `#line-${n}`, class: `diag ${m[4]}`, onclick: (e) => { e.preventDefault(); goTo(n); } },
          line), '\n');
      } else {
        parts.push(`${line}\n`);
      }
    }
    fill(output, parts);
  };

  const el = h('div', { class: 'editor' }, gutter,
    h('label', { for: 'code', class: 'sr' }, 'Sketch source'), area);
  return { el, output, showOutput, value: () => area.value };
}
