// A board's camera: the live picture with its frame rate, its state
// ("Camera offline: reconnecting…") and full screen. The stream is read with
// `fetch` and the token in a header (never in a URL), part by part
// (mjpeg.js); when it ends for a reason (the session is over), the panel
// says why.

import { session, api } from './api.js';
import { h } from './ui.js';
import { PartReader, framesPerSecond, stateText } from './mjpeg.js';

/** The camera panel of `device` (from GET /devices), or null when it has none. */
export function cameraPanel(device) {
  if (!device.camera) return null;
  const id = encodeURIComponent(device.id);
  const image = h('img', { id: 'camera-image', class: 'camera', alt: `Live picture of ${device.name || device.id}` });
  const state = h('p', { id: 'camera-state', class: 'muted', 'aria-live': 'polite' }, 'Connecting to the camera…');
  const fps = h('span', { id: 'camera-fps', class: 'muted' }, '');
  const full = h('button', { type: 'button', class: 'secondary', id: 'camera-full' }, 'Full screen');
  const el = h('section', { class: 'card', 'aria-labelledby': 'camera-title' },
    h('h3', { id: 'camera-title' }, 'Camera'), image, h('div', { class: 'row spread' }, state, fps), full);
  full.addEventListener('click', () => image.requestFullscreen?.().catch(() => {}));

  let stopped = false;
  let ended = false;
  let abort = null;
  let shown = null;
  const times = [];

  const show = (bytes) => {
    const url = URL.createObjectURL(new Blob([bytes], { type: 'image/jpeg' }));
    image.src = url;
    if (shown) URL.revokeObjectURL(shown);
    shown = url;
    const now = Date.now();
    times.push(now);
    while (times.length && now - times[0] > 1000) times.shift();
  };

  const watch = async () => {
    abort = new AbortController();
    const headers = session.token ? { Authorization: `Bearer ${session.token}` } : {};
    const response = await fetch(`/devices/camera/${id}/stream`, { headers, signal: abort.signal });
    if (!response.ok) {
      const refusal = await response.json().catch(() => ({}));
      ended = true;
      state.textContent = refusal.detail || `The camera refused: ${response.status}`;
      return;
    }
    const reader = new PartReader('rerodframe');
    const body = response.body.getReader();
    for (;;) {
      const { value, done } = await body.read();
      if (done) return;
      for (const part of reader.push(value)) {
        if (part.type === 'image/jpeg') show(part.bytes);
        else {
          const reason = JSON.parse(new TextDecoder().decode(part.bytes));
          ended = true;
          state.textContent = `Camera stopped: ${reason.detail}`;
          fps.textContent = '';
        }
      }
    }
  };

  // The state (live, offline and retried) comes from the camera itself.
  const poll = async () => {
    if (ended) return;
    try {
      const answer = await api(`/devices/camera/${id}`);
      if (!ended) state.textContent = stateText(answer.camera.state);
    } catch { /* the stream says what went wrong */ }
    if (!ended) fps.textContent = `${framesPerSecond(times, Date.now())} fps`;
  };
  const timer = setInterval(poll, 1000);

  (async () => {
    // A stream cut by the network (not by the server's reason) is opened again.
    while (!stopped && !ended) {
      await watch().catch(() => {});
      if (!stopped && !ended) await new Promise((r) => setTimeout(r, 2000));
    }
  })();

  return {
    el,
    stop() {
      stopped = true;
      clearInterval(timer);
      abort?.abort();
      if (shown) URL.revokeObjectURL(shown);
    },
  };
}
