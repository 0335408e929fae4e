// One board's day: every slot with its state (past, mine, booked, available,
// blocked), kept current by the /slot-booking socket, booked or cancelled
// with one click, and every refusal shown in the server's words.

import { api, session, slotFeed } from './api.js';
import { h, fill, toast } from './ui.js';
import { clock, day, addDays, zoneName } from './time.js';

const LABELS = { past: 'past', mine: 'yours', booked: 'booked', available: 'free', blocked: 'blocked' };

/** Renders the calendar of `deviceId` into `main`; returns what stops it. */
export async function calendarView(main, lab, deviceId) {
  const device = lab.devices.find((d) => d.id === deviceId || String(d.number) === deviceId) || lab.devices[0];
  let first = await api(`/slots?device=${encodeURIComponent(device.id)}`);
  const today = first.date;
  let date = today;
  // Our own bookings, so a broadcast that hides other people's e-mail
  // (`lab.privacy`) still shows ours as ours.
  const mine = new Set();
  const grid = h('ol', { class: 'slots', id: 'slots', 'aria-label': `Slots of ${device.name || device.id}` });
  const title = h('h2', { id: 'cal-title' });
  const status = h('p', { class: 'error', role: 'alert', id: 'cal-status' });

  const render = (data) => {
    for (const s of data.slots) {
      if (s.status === 'mine') mine.add(`${data.date}/${s.id}`);
      else if (s.booked_by && s.booked_by !== session.user.email) mine.delete(`${data.date}/${s.id}`);
      else if (!s.is_booked) mine.delete(`${data.date}/${s.id}`);
    }
    title.textContent = `${device.name || device.id}: ${day(data.date)}${data.date === today ? ' (today)' : ''}`;
    fill(grid, data.slots.map((s) => slotItem(data, s)));
  };

  const stateOf = (data, s) => {
    if (s.status === 'past' || Date.parse(s.end) <= Date.now()) return 'past';
    if (s.status === 'blocked') return 'blocked';
    if (s.status === 'mine' || (s.is_booked && (s.booked_by === session.user.email || mine.has(`${data.date}/${s.id}`)))) {
      return 'mine';
    }
    return s.is_booked ? 'booked' : 'available';
  };

  const slotItem = (data, s) => {
    const state = stateOf(data, s);
    const time = `${clock(s.start)}–${clock(s.end)}`;
    const who = state === 'booked' && s.booked_by ? ` by ${s.booked_by}` : '';
    const action = { available: 'Book', mine: 'Cancel' }[state];
    const now = Date.parse(s.start) <= Date.now() && Date.now() < Date.parse(s.end);
    return h('li', { class: `slot ${state}${now ? ' now' : ''}`, 'data-slot': s.id, 'data-state': state },
      h('span', { class: 'time' }, time),
      h('span', { class: 'state' }, `${LABELS[state]}${who}${now ? ' · now' : ''}`),
      action
        ? h('button', {
          type: 'button',
          class: state === 'mine' ? 'secondary' : '',
          'aria-label': `${action} ${time} on ${day(data.date)}`,
          onclick: () => act(action === 'Book' ? '/book-slot' : '/cancel-slot', data, s),
        }, action)
        : h('span', { class: 'no-action' }),
      state === 'mine' && now && h('a', { class: 'button', href: `#/session/${encodeURIComponent(device.id)}` }, 'Open session'));
  };

  const act = async (path, data, s) => {
    status.textContent = '';
    try {
      const answer = await api(path, { method: 'POST', body: { slot_id: s.id, date: data.date, device: device.id } });
      const key = `${data.date}/${s.id}`;
      if (path === '/book-slot') mine.add(key);
      else mine.delete(key);
      toast(answer.message);
      await load();
    } catch (e) {
      status.textContent = e.message;
      toast(e.message, 'error');
    }
  };

  const load = async () => {
    const data = date === first?.date ? first : await api(`/slots?device=${encodeURIComponent(device.id)}&date=${date}`);
    first = null;
    slotFeed.views.set('calendar', [device.id, date]);
    render(data);
  };

  const go = (n) => async () => {
    date = n === 0 ? today : addDays(date, n);
    status.textContent = '';
    try {
      await load();
    } catch (e) {
      status.textContent = e.message;
    }
  };

  const off = slotFeed.subscribe((m) => {
    if (m.type === 'slots_update' && m.data.device === device.id && m.data.date === date) render(m.data);
  });
  const tick = setInterval(() => load().catch(() => {}), 60000);

  fill(main,
    h('p', {}, h('a', { href: '#/' }, '← Boards')),
    title,
    h('div', { class: 'row', role: 'group', 'aria-label': 'Day' },
      h('button', { type: 'button', class: 'secondary', onclick: go(-1), 'aria-label': 'Previous day' }, '‹ Previous'),
      h('button', { type: 'button', class: 'secondary', onclick: go(0) }, 'Today'),
      h('button', { type: 'button', class: 'secondary', onclick: go(1), 'aria-label': 'Next day' }, 'Next ›')),
    h('p', { class: 'muted' }, `Times in ${zoneName()}. ${device.online ? 'The board is online.' : 'The board is offline.'}`),
    status,
    grid);
  await load();
  return () => {
    off();
    clearInterval(tick);
    slotFeed.views.delete('calendar');
  };
}
