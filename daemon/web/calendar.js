// One board's calendar, a day or a week (Monday to Sunday) at a time: every
// slot with its state (past, mine, booked, available, blocked), kept current
// by the /slot-booking socket for every day on view, booked or cancelled
// with one click, and every refusal shown in the server's words.

import { api, session, slotFeed } from './api.js';
import { h, fill, toast } from './ui.js';
import { clock, until, day, when, addDays, weekStart, zoneName } from './time.js';
import { describe, rememberMine } from './slots.js';
import { cameraPanel } from './camera.js';

const MODES = { day: { days: 1, step: 1, unit: 'day' }, week: { days: 7, step: 7, unit: 'week' } };

/** Renders the calendar of `deviceId` into `main` (`mode`: 'day' or 'week'); returns what stops it. */
export async function calendarView(main, lab, deviceId, mode = 'day') {
  const device = lab.devices.find((d) => d.id === deviceId || String(d.number) === deviceId) || lab.devices[0];
  const { days: nDays, step, unit } = MODES[mode] || MODES.day;
  let first = await api(`/slots?device=${encodeURIComponent(device.id)}`);
  const today = first.date;
  const home = () => (mode === 'week' ? weekStart(today) : today);
  let start = home();
  // The days on view, by date: the latest answer or broadcast for each.
  const shown = new Map();
  // Our own bookings, so a broadcast that hides other people's e-mail
  // (`lab.privacy`) still shows ours as ours.
  const mine = new Set();
  const lists = new Map();
  const name = device.name || device.id;
  const title = h('h2', { id: 'cal-title' });
  const status = h('p', { class: 'error', role: 'alert', id: 'cal-status' });
  const body = h('div', { id: 'calendar', class: mode === 'week' ? 'week' : 'day-view' });

  const dates = () => Array.from({ length: nDays }, (_, i) => addDays(start, i));

  const viewer = () => ({ email: session.user.email, mine, now: Date.now() });

  const slotItem = (data, s) => {
    const { state, now, label, action } = describe(data.date, s, viewer());
    const time = `${clock(s.start)}–${until(s.end)}`;
    // Focusable from script only: a slot whose button a broadcast takes
    // away keeps the focus, so the keyboard's place is not lost.
    return h('li', {
      class: `slot ${state}${now ? ' now' : ''}`, 'data-slot': s.id, 'data-date': data.date, 'data-state': state, tabindex: -1,
    },
      h('span', { class: 'time' }, time),
      h('span', { class: 'state' }, label),
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

  /** Redraws one day's list, keeping the keyboard's place in it. */
  const render = (data) => {
    const list = lists.get(data.date);
    if (!list) return;
    rememberMine(mine, data, session.user.email);
    shown.set(data.date, data);
    const focused = list.contains(document.activeElement) ? document.activeElement.closest('li')?.dataset.slot : undefined;
    fill(list, data.slots.map((s) => slotItem(data, s)));
    if (data.slots.length === 0) list.append(h('li', { class: 'muted' }, 'No slots on this day.'));
    if (focused !== undefined) {
      const again = list.querySelector(`li[data-slot="${focused}"]`);
      (again?.querySelector('button, a') || again)?.focus?.();
    }
  };

  /** Builds the empty lists of the days on view: one, or seven side by side (stacked on a phone). */
  const layout = () => {
    lists.clear();
    const days = dates();
    title.textContent = mode === 'week'
      ? `${name}: week of ${day(days[0])} – ${day(days[days.length - 1])}`
      : `${name}: ${day(days[0])}${days[0] === today ? ' (today)' : ''}`;
    // Past days take less room: they only show what was.
    const nPast = days.filter((date) => date < today).length;
    body.className = mode === 'week' ? `week past-${nPast}` : 'day-view';
    fill(body, days.map((date) => {
      const heading = `${day(date)}${date === today ? ' (today)' : ''}`;
      const list = h('ol', { class: 'slots', id: mode === 'week' ? null : 'slots', 'aria-label': `Slots of ${name} on ${heading}` });
      lists.set(date, list);
      if (mode !== 'week') return list;
      const age = date < today ? ' past' : date === today ? ' today' : '';
      return h('section', { class: `week-day${age}`, 'data-date': date },
        h('h3', { title: heading }, day(date), date === today && h('span', { class: 'sr' }, ' (today)')), list);
    }));
  };

  const load = async () => {
    const days = dates();
    const answers = await Promise.all(days.map((date) => (date === first?.date
      ? first
      : api(`/slots?device=${encodeURIComponent(device.id)}&date=${date}`))));
    first = null;
    // Asked again on every reconnect, so a day on view never misses a change.
    for (const key of [...slotFeed.views.keys()]) if (key.startsWith('calendar')) slotFeed.views.delete(key);
    days.forEach((date, i) => slotFeed.views.set(`calendar ${i}`, [device.id, date]));
    layout();
    shown.clear();
    answers.forEach(render);
  };

  const act = async (path, data, s) => {
    status.textContent = '';
    try {
      const answer = await api(path, { method: 'POST', body: { slot_id: s.id, date: data.date, device: device.id } });
      const key = `${data.date}/${s.id}`;
      if (path === '/book-slot') mine.add(key);
      else mine.delete(key);
      // The time the student picked, not the slot's number.
      const verb = path === '/book-slot' ? 'Booked' : 'Cancelled';
      toast(`${verb} ${when(s.start)}–${until(s.end)} on ${device.name || device.id}.`);
      render(await api(`/slots?device=${encodeURIComponent(device.id)}&date=${data.date}`));
    } catch (e) {
      status.textContent = e.message;
      toast(e.message, 'error');
    }
  };

  const go = (n) => async () => {
    start = n === 0 ? home() : addDays(start, n * step);
    status.textContent = '';
    try {
      await load();
    } catch (e) {
      status.textContent = e.message;
    }
  };

  const off = slotFeed.subscribe((m) => {
    if (m.type === 'slots_update' && m.data.device === device.id && lists.has(m.data.date)) render(m.data);
  });
  // Slots turn past as time goes by; the states are worked out again each minute.
  const tick = setInterval(() => { for (const data of shown.values()) render(data); }, 60000);

  // A public camera shows the board to anyone looking at its calendar.
  const camera = device.camera?.visibility === 'public' ? cameraPanel(device) : null;
  const base = `#/board/${encodeURIComponent(device.id)}`;
  const toggle = (which, label) => h('a', {
    class: `button${which === mode ? '' : ' secondary'}`,
    href: which === 'week' ? `${base}/week` : base,
    'aria-current': which === mode ? 'page' : null,
    id: `view-${which}`,
  }, label);
  fill(main,
    h('p', {}, h('a', { href: '#/' }, '← Boards')),
    title,
    h('div', { class: 'row spread' },
      h('div', { class: 'row', role: 'group', 'aria-label': `Move by ${unit}` },
        h('button', { type: 'button', class: 'secondary', onclick: go(-1), id: 'cal-prev', 'aria-label': `Previous ${unit}` },
          '‹ Previous'),
        h('button', { type: 'button', class: 'secondary', onclick: go(0), id: 'cal-home' }, mode === 'week' ? 'This week' : 'Today'),
        h('button', { type: 'button', class: 'secondary', onclick: go(1), id: 'cal-next', 'aria-label': `Next ${unit}` }, 'Next ›')),
      h('nav', { class: 'row', 'aria-label': 'Calendar view' }, toggle('day', 'Day'), toggle('week', 'Week'))),
    h('p', { class: 'muted' }, `Times in ${zoneName()}. ${device.online ? 'The board is online.' : 'The board is offline.'}`),
    status,
    body,
    camera?.el);
  await load();
  // On a phone the slot in progress can be far down the day: bring it into view.
  body.querySelector('li.slot.now')?.scrollIntoView({ block: 'center' });
  return () => {
    camera?.stop();
    off();
    clearInterval(tick);
    for (const key of [...slotFeed.views.keys()]) if (key.startsWith('calendar')) slotFeed.views.delete(key);
  };
}
