// Pure: reads rerod's camera stream (multipart/x-mixed-replace, every part
// with Content-Length) part by part, from the byte chunks `fetch` gives.

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Where `needle` first occurs in `bytes` at or after `from`, or -1. */
function indexOf(bytes, needle, from = 0) {
  outer: for (let i = from; i <= bytes.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (bytes[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** Cuts a stream's bytes into parts `{type, bytes}`; `end` is set after the closing boundary. */
export class PartReader {
  constructor(boundary) {
    this.delimiter = encoder.encode(`--${boundary}`);
    this.buffer = new Uint8Array(0);
    this.end = false;
  }

  /** Adds a chunk; returns the whole parts it completed. */
  push(chunk) {
    const joined = new Uint8Array(this.buffer.length + chunk.length);
    joined.set(this.buffer);
    joined.set(chunk, this.buffer.length);
    this.buffer = joined;
    const parts = [];
    for (;;) {
      const start = indexOf(this.buffer, this.delimiter);
      if (start < 0) break;
      const after = start + this.delimiter.length;
      if (this.buffer.length < after + 2) break;
      if (this.buffer[after] === 45 && this.buffer[after + 1] === 45) {
        this.end = true;
        this.buffer = new Uint8Array(0);
        break;
      }
      const headEnd = indexOf(this.buffer, encoder.encode('\r\n\r\n'), after);
      if (headEnd < 0) break;
      const head = decoder.decode(this.buffer.subarray(after, headEnd));
      const header = (name) => head.split('\r\n').map((l) => l.split(':')).find(([k]) => k.trim().toLowerCase() === name)?.[1]?.trim();
      const length = Number(header('content-length'));
      const bodyStart = headEnd + 4;
      if (!Number.isInteger(length) || this.buffer.length < bodyStart + length) break;
      parts.push({ type: header('content-type') || '', bytes: this.buffer.slice(bodyStart, bodyStart + length) });
      this.buffer = this.buffer.slice(bodyStart + length);
    }
    return parts;
  }
}

/** Frames a second over the last second, from the times frames arrived (ms). */
export function framesPerSecond(times, now) {
  return times.filter((t) => now - t <= 1000).length;
}

/** What a camera's state says to the person watching. */
export function stateText(state) {
  return {
    idle: 'Camera idle',
    connecting: 'Connecting to the camera…',
    live: 'Live',
    offline: 'Camera offline: reconnecting…',
    removed: 'This board no longer has a camera',
  }[state] || state;
}
