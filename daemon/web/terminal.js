// The serial console's screen: what sketches print, drawn as a terminal
// would. It keeps a long scrollback, handles carriage return, backspace,
// tabs, ANSI colours (SGR), erase-line and clear-screen, and redraws only
// the lines that changed.

const MAX_LINES = 5000;
const COLOURS = ['black', 'red', 'green', 'yellow', 'blue', 'magenta', 'cyan', 'white'];

export class Terminal {
  /** `pre` is the element the screen is drawn into. */
  constructor(pre) {
    this.pre = pre;
    this.lines = [[]];
    this.nodes = [];
    this.row = 0;
    this.col = 0;
    this.style = '';
    this.escape = null;
    this.dirty = new Set();
    this.frame = 0;
  }

  /** Feeds text from the board. */
  write(text) {
    for (const ch of text) this.put(ch);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.draw());
  }

  /** Empties the screen and the scrollback. */
  clear() {
    this.lines = [[]];
    this.row = 0;
    this.col = 0;
    this.pre.replaceChildren();
    this.nodes = [];
    this.dirty = new Set([0]);
    this.draw();
  }

  /** Everything on the screen and in the scrollback, as plain text. */
  text() {
    return this.lines.map((line) => line.map((cell) => cell.ch).join('')).join('\n');
  }

  put(ch) {
    if (this.escape !== null) {
      this.escape += ch;
      if (this.escape === '[') return;
      if (this.escape.length === 1 && this.escape !== '[') {
        this.escape = null;
        return;
      }
      if (/[@-~]/.test(ch) && this.escape.length > 1) {
        this.control(this.escape.slice(1, -1), ch);
        this.escape = null;
      } else if (this.escape.length > 32) {
        this.escape = null;
      }
      return;
    }
    switch (ch) {
      case '\x1b': this.escape = ''; return;
      case '\r': this.col = 0; return;
      case '\n': this.newline(); return;
      case '\b': this.col = Math.max(0, this.col - 1); return;
      case '\t': this.col = (Math.floor(this.col / 8) + 1) * 8; return;
      case '\x07': case '\0': return;
      default: break;
    }
    const line = this.lines[this.row];
    while (line.length < this.col) line.push({ ch: ' ', style: '' });
    line[this.col] = { ch, style: this.style };
    this.col += 1;
    this.dirty.add(this.row);
  }

  newline() {
    this.row += 1;
    this.col = 0;
    if (this.row >= this.lines.length) this.lines.push([]);
    this.dirty.add(this.row);
    if (this.lines.length > MAX_LINES) {
      const drop = this.lines.length - MAX_LINES;
      this.lines.splice(0, drop);
      for (const node of this.nodes.splice(0, drop)) node.remove();
      this.row -= drop;
      this.dirty = new Set([...this.dirty].map((r) => r - drop).filter((r) => r >= 0));
    }
  }

  /** A CSI sequence: `params` then the final byte. */
  control(params, final) {
    const args = params.split(';').map((p) => Number.parseInt(p, 10));
    const line = this.lines[this.row];
    if (final === 'm') {
      this.style = sgr(this.style, args);
    } else if (final === 'J' && (args[0] === 2 || args[0] === 3)) {
      this.clear();
    } else if (final === 'J') {
      line.length = Math.min(line.length, this.col);
      this.lines.length = this.row + 1;
      this.dirty.add(this.row);
    } else if (final === 'K') {
      if (args[0] === 2) line.length = 0;
      else if (args[0] === 1) for (let i = 0; i < Math.min(this.col, line.length); i += 1) line[i] = { ch: ' ', style: '' };
      else line.length = Math.min(line.length, this.col);
      this.dirty.add(this.row);
    } else if (final === 'H' || final === 'f') {
      // Homing on a log-like console: the screen is its last lines.
      this.col = Math.max(0, (args[1] || 1) - 1);
    } else if (final === 'D') {
      this.col = Math.max(0, this.col - (args[0] || 1));
    } else if (final === 'C') {
      this.col += args[0] || 1;
    } else if (final === 'G') {
      this.col = Math.max(0, (args[0] || 1) - 1);
    }
  }

  draw() {
    this.frame = 0;
    const atBottom = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 4;
    while (this.nodes.length > this.lines.length) this.nodes.pop().remove();
    for (const row of [...this.dirty].sort((a, b) => a - b)) {
      while (this.nodes.length <= row && this.nodes.length < this.lines.length) {
        const div = document.createElement('div');
        this.pre.append(div);
        this.nodes.push(div);
      }
      const node = this.nodes[row];
      if (node) node.replaceChildren(...runs(this.lines[row]));
    }
    this.dirty.clear();
    if (atBottom) this.pre.scrollTop = this.pre.scrollHeight;
  }
}

/** The line as spans, one per run of cells of one style. */
function runs(line) {
  const out = [];
  let text = '';
  let style = null;
  const flush = () => {
    if (!text) return;
    if (style) {
      const span = document.createElement('span');
      span.className = style;
      span.textContent = text;
      out.push(span);
    } else {
      out.push(document.createTextNode(text));
    }
    text = '';
  };
  for (const cell of line) {
    if (cell.style !== style) {
      flush();
      style = cell.style;
    }
    text += cell.ch;
  }
  flush();
  if (!out.length) out.push(document.createTextNode('\u200b'));
  return out;
}

/** The class list after an SGR sequence (`ESC [ 1;31 m`). */
function sgr(current, args) {
  const classes = new Set(current.split(' ').filter(Boolean));
  const drop = (prefix) => { for (const c of [...classes]) if (c.startsWith(prefix)) classes.delete(c); };
  for (const n of args.length ? args : [0]) {
    if (Number.isNaN(n) || n === 0) classes.clear();
    else if (n === 1) classes.add('t-bold');
    else if (n === 22) classes.delete('t-bold');
    else if (n === 4) classes.add('t-under');
    else if (n === 24) classes.delete('t-under');
    else if (n === 7) classes.add('t-inverse');
    else if (n === 27) classes.delete('t-inverse');
    else if (n >= 30 && n <= 37) { drop('t-fg-'); classes.add(`t-fg-${COLOURS[n - 30]}`); }
    else if (n >= 90 && n <= 97) { drop('t-fg-'); classes.add(`t-fg-bright-${COLOURS[n - 90]}`); }
    else if (n === 39) drop('t-fg-');
    else if (n >= 40 && n <= 47) { drop('t-bg-'); classes.add(`t-bg-${COLOURS[n - 40]}`); }
    else if (n === 49) drop('t-bg-');
  }
  return [...classes].join(' ');
}
