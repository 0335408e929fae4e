// Building the page: a small element builder and the status line.

/**
 * `h('button', {type: 'button', onclick}, 'Book')`: an element with its
 * attributes (functions become listeners, `null`/`false` are left out) and
 * children (strings become text, arrays are flattened).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces everything in `el` with `children`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let toastTimer = null;
let toastShownAt = 0;

/** Shows a message in the status line (read out by screen readers). */
export function toast(message, kind = 'info') {
  const el = document.getElementById('toast');
  el.textContent = message;
  el.className = `toast show ${kind}`;
  toastShownAt = Date.now();
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.className = 'toast'; }, kind === 'error' ? 8000 : 4000);
}

/**
 * A new page: a message about the last one goes, so it never covers the new
 * page's list. One shown just now (the action that led here) stays.
 */
export function toastLeavePage() {
  if (Date.now() - toastShownAt < 1000) return;
  clearTimeout(toastTimer);
  document.getElementById('toast').className = 'toast';
}

/** A form's error line: `show(text)` fills it, `show('')` empties it. */
export function errorLine() {
  const el = h('p', { class: 'error', role: 'alert' });
  return { el, show(text) { el.textContent = text; } };
}
