// The session view: during one's slot, flash the board (a .hex or .bin file,
// or a sketch compiled by the lab) with a progress bar fed by the console's
// `upload_progress`, and use its serial console; a countdown to the slot's
// end and a clear "session ended" state when it is over.

import { api, session, socketUrl } from './api.js';
import { h, fill, toast } from './ui.js';
import { clock, until, span, zoneName } from './time.js';
import { boardAccess } from './slots.js';
import { Terminal } from './terminal.js';
import { editor } from './editor.js';
import { cameraPanel } from './camera.js';

const ENDINGS = { lf: '\n', crlf: '\r\n', cr: '\r', none: '' };

/** Renders the session of `deviceId` into `main`; returns what stops it. */
export async function sessionView(main, lab, deviceId) {
  const device = lab.devices.find((d) => d.id === deviceId || String(d.number) === deviceId) || lab.devices[0];
  const booking = await api('/slots/user').catch(() => ({ has_booking: false }));
  const holding = booking.has_booking && booking.is_current && (booking.device === device.id || booking.device === String(device.number));
  // Who may flash and type: the holder, and admins. Everyone else sees the
  // controls, disabled, and what to do instead.
  const allowed = holding || session.isAdmin;
  const today = () => api(`/slots?device=${encodeURIComponent(device.id)}`).catch(() => null);
  let ended = false;
  let socket = null;
  let timer = null;

  const state = h('p', { id: 'session-state', class: 'big', 'aria-live': 'polite' });
  const banner = h('div', { id: 'session-banner', class: 'banner', role: 'alert', hidden: true });
  const uploadStatus = h('p', { id: 'upload-status', role: 'alert', class: 'error' });
  const progress = h('progress', { id: 'progress', max: 100, value: 0, 'aria-label': 'Upload progress' });
  const progressLabel = h('span', { id: 'progress-label', class: 'muted' }, 'No upload yet');
  const consoleState = h('p', { id: 'console-state', class: 'muted' }, 'Console: connecting…');
  const screen = h('pre', { id: 'terminal', class: 'terminal', tabindex: 0, role: 'log', 'aria-label': 'Serial console output' });
  const terminal = new Terminal(screen);
  const file = h('input', { id: 'firmware', type: 'file', accept: '.hex,.bin,.ihx', class: 'sr-file' });
  const code = editor();
  const camera = cameraPanel(device);

  /** Disables what needs the board (flashing, typing); Clear and Copy stay usable. */
  const lockControls = () => {
    main.querySelectorAll('[data-session] button, [data-session] input, [data-session] select, [data-session] textarea')
      .forEach((el) => { if (!el.matches('#clear, #copy')) el.disabled = true; });
    drop.classList.add('disabled');
    drop.querySelector('label.button')?.setAttribute('aria-disabled', 'true');
  };

  /** A button that books `slot` of today and comes back to this session. */
  const bookButton = (slot, date, text) => h('button', {
    type: 'button', id: 'book-next',
    onclick: async () => {
      try {
        await api('/book-slot', { method: 'POST', body: { slot_id: slot.id, date, device: device.id } });
        toast(`Booked ${clock(slot.start)}–${until(slot.end)} on ${device.name || device.id}.`);
        window.dispatchEvent(new HashChangeEvent('hashchange'));
      } catch (e) {
        toast(e.message, 'error');
      }
    },
  }, text);

  const end = async (message) => {
    if (ended) return;
    ended = true;
    clearInterval(timer);
    // Said once, in the banner; the state line offers what comes next.
    banner.hidden = false;
    banner.textContent = `Session ended: ${message}`;
    state.textContent = '';
    lockControls();
    main.querySelector('#end-session')?.remove();
    socket?.close();
    const day = await today();
    const { next } = boardAccess(day, { email: session.user?.email, now: Date.now() });
    fill(state, next
      ? bookButton(next, day.date, `Book the next free slot, ${clock(next.start)}–${until(next.end)}`)
      : h('a', { href: `#/board/${encodeURIComponent(device.id)}` }, 'No free slot left today: see the calendar'));
  };

  const upload = async (body, what) => {
    if (ended || !allowed) return;
    uploadStatus.textContent = '';
    uploadStatus.className = 'error';
    progress.value = 0;
    progress.classList.remove('failed');
    progressLabel.textContent = `Uploading ${what}…`;
    try {
      const answer = await api(`/devices/upload/${encodeURIComponent(device.id)}`, { method: 'POST', ...body });
      progress.value = 100;
      progressLabel.textContent = 'Done';
      uploadStatus.className = 'ok';
      uploadStatus.textContent = `${answer.message} (${answer.bytes_written} bytes in ${(answer.duration_ms / 1000).toFixed(1)} s)`;
      if (answer.compile_output) code.showOutput(answer.compile_output);
    } catch (e) {
      // The bar stays where the upload stopped, marked as failed, never full.
      progress.classList.add('failed');
      if (progress.value >= 100) progress.value = 0;
      progressLabel.textContent = 'Upload failed';
      uploadStatus.textContent = e.message;
    }
  };

  const sendFile = (chosen) => {
    if (!chosen || ended || !allowed) return;
    if (!/\.(hex|bin|ihx)$/i.test(chosen.name)) {
      uploadStatus.textContent = `${chosen.name} is not a .hex or .bin file.`;
      return;
    }
    upload({ raw: chosen }, chosen.name);
  };
  file.addEventListener('change', () => sendFile(file.files[0]));
  const drop = h('div', { id: 'drop', class: 'drop' },
    h('p', {}, 'Drop a .hex or .bin file here, or '),
    h('label', { for: 'firmware', class: 'button' }, 'Choose a file…'), file);
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    sendFile(e.dataTransfer.files[0]);
  });

  const compile = async () => {
    code.showOutput('Compiling…');
    try {
      const answer = await api('/devices/compile', { method: 'POST', body: { code: code.value(), device: device.id } });
      code.showOutput(answer.compile_output || answer.message);
    } catch (e) {
      code.showOutput(e.message);
    }
  };

  const input = h('input', { id: 'console-input', type: 'text', autocomplete: 'off', placeholder: 'Text to send to the board' });
  const ending = h('select', { id: 'line-ending' },
    h('option', { value: 'lf' }, 'Newline (LF)'), h('option', { value: 'crlf' }, 'CR+LF'),
    h('option', { value: 'cr' }, 'Carriage return (CR)'), h('option', { value: 'none' }, 'No line ending'));
  const send = (e) => {
    e.preventDefault();
    if (socket?.readyState !== WebSocket.OPEN) {
      toast('The console is not connected.', 'error');
      return;
    }
    socket.send(JSON.stringify({ type: 'input', data: input.value + ENDINGS[ending.value] }));
    input.value = '';
  };
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(terminal.text());
      toast('Console text copied.');
    } catch {
      toast('Copying was refused by the browser; select the text instead.', 'error');
    }
  };

  const cancel = async () => {
    try {
      await api('/cancel-slot', { method: 'POST', body: { slot_id: booking.slot, date: booking.date, device: device.id } });
      toast('Booking cancelled.');
      end('you cancelled your booking.');
    } catch (e) {
      toast(e.message, 'error');
    }
  };

  fill(main,
    h('p', {}, h('a', { href: '#/' }, '← Boards')),
    h('h2', {}, `Session: ${device.name || device.id}`),
    state, banner,
    h('div', { 'data-session': true, class: 'session' },
      h('section', { 'aria-labelledby': 'flash-title', class: 'card' },
        h('h3', { id: 'flash-title' }, 'Flash the board'),
        drop,
        h('div', { class: 'progress' }, progress, ' ', progressLabel),
        uploadStatus,
        h('details', {},
          h('summary', {}, 'Write a sketch'),
          code.el,
          h('div', { class: 'row' },
            h('button', { type: 'button', id: 'compile', class: 'secondary', onclick: compile }, 'Compile'),
            h('button', { type: 'button', id: 'upload-code', onclick: () => upload({ body: { code: code.value() } }, 'sketch') },
              'Compile and upload')),
          code.output)),
      h('section', { 'aria-labelledby': 'console-title', class: 'card' },
        h('h3', { id: 'console-title' }, 'Serial console'),
        consoleState,
        screen,
        h('form', { class: 'row console-input', onsubmit: send },
          h('label', { for: 'console-input', class: 'sr' }, 'Send to the board'), input,
          h('label', { for: 'line-ending', class: 'sr' }, 'Line ending'), ending,
          h('button', { type: 'submit', id: 'send' }, 'Send')),
        h('div', { class: 'row' },
          h('button', { type: 'button', class: 'secondary', id: 'clear', onclick: () => terminal.clear() }, 'Clear'),
          h('button', { type: 'button', class: 'secondary', id: 'copy', onclick: copy }, 'Copy all'))),
      camera?.el),
    holding && h('p', {}, h('button', { type: 'button', id: 'end-session', class: 'danger', onclick: cancel },
      'End session and cancel the booking')));

  if (holding) {
    const endsAt = Date.parse(booking.end);
    const warned = new Set();
    const tick = () => {
      const left = endsAt - Date.now();
      if (left <= 0) {
        end('your slot is over.');
        return;
      }
      state.textContent = `Your session ends at ${until(booking.end)} (${zoneName()}): ${span(left)} left`;
      for (const minutes of [5, 1]) {
        if (left <= minutes * 60000 && !warned.has(minutes)) {
          warned.add(minutes);
          toast(`${minutes} minute${minutes > 1 ? 's' : ''} left in your session.`, 'warn');
        }
      }
    };
    tick();
    timer = setInterval(tick, 1000);
  } else if (session.isAdmin) {
    state.textContent = 'You are an admin: you may use this board at any time.';
  } else {
    lockControls();
    const day = await today();
    const access = boardAccess(day, { email: session.user?.email, now: Date.now() });
    const calendar = h('a', { href: `#/board/${encodeURIComponent(device.id)}` }, 'its calendar');
    if (access.kind === 'free') {
      fill(state, 'You do not hold this board now. ',
        bookButton(access.slot, day.date, `Book it now, ${clock(access.slot.start)}–${until(access.slot.end)}`));
    } else if (access.kind === 'taken') {
      fill(state, `Someone else holds this board until ${until(access.slot.end)}. `,
        access.next
          ? bookButton(access.next, day.date, `Book ${clock(access.next.start)}–${until(access.next.end)}`)
          : h('a', { href: `#/board/${encodeURIComponent(device.id)}` }, 'See its calendar for a free slot'));
    } else {
      fill(state, 'This board cannot be booked now; see ', calendar, '.');
    }
  }

  if (!allowed) {
    // The console is the holder's: asking for it would only be refused.
    consoleState.textContent = 'Console: only the student holding the board (or an admin) can use it.';
    return () => clearInterval(timer);
  }
  socket = new WebSocket(socketUrl(`/devices/read/${encodeURIComponent(device.id)}`));
  socket.addEventListener('open', () => socket.send(JSON.stringify({ token: session.token })));
  socket.addEventListener('message', (event) => {
    const m = JSON.parse(event.data);
    if (m.type === 'connection_established') consoleState.textContent = 'Console: connected.';
    else if (m.type === 'serial_output') terminal.write(m.output);
    else if (m.type === 'upload_progress' && m.phase === 'failed') {
      progress.value = m.percent;
      progress.classList.add('failed');
      progressLabel.textContent = 'Upload failed';
    } else if (m.type === 'upload_progress') {
      progress.value = m.percent;
      progressLabel.textContent = `${m.phase} ${m.percent}%${m.message ? `: ${m.message}` : ''}`;
    } else if (m.type === 'session_ended') end(m.message.replace(/^Your session on .+? ended: /, ''));
    else if (m.type === 'device_status') consoleState.textContent = m.online ? 'Console: the board is back online.' : 'Console: the board is offline.';
    // The server's text may name the host's port; the student needs what happened.
    else if (m.type === 'error' && m.code === 'device_offline') consoleState.textContent = 'Console: the board is offline; the console resumes when it is back.';
    else if (m.type === 'error') consoleState.textContent = `Console: ${m.message}`;
  });
  socket.addEventListener('close', () => {
    if (!consoleState.textContent.startsWith('Console: connected')) return;
    consoleState.textContent = 'Console: closed.';
  });

  return () => {
    clearInterval(timer);
    socket?.close();
    camera?.stop();
  };
}
