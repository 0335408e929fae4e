// The lab admin's page: accounts (disable, enable; searched by address),
// boards and their state (maintenance on and off), and the day's bookings
// across boards with a cancel for any of them. What cancels bookings or
// signs someone out asks first.

import { api } from './api.js';
import { h, fill, toast } from './ui.js';
import { clock, until, day, zoneName } from './time.js';

/** Renders the admin page into `main`; returns what stops it. */
export async function adminView(main, lab) {
  const [users, health, days] = await Promise.all([
    api('/admin/users'),
    api('/health'),
    Promise.all(lab.devices.map((d) => api(`/slots?device=${encodeURIComponent(d.id)}`))),
  ]);
  const healthOf = Object.fromEntries(health.device_health.map((d) => [d.id, d]));
  const devices = await api('/devices');
  const reload = () => adminView(main, lab);
  const run = (what, question) => async () => {
    // A destructive action asks first; the browser's own dialog is keyboard- and reader-friendly.
    if (question && !window.confirm(question)) return;
    try {
      const answer = await what();
      toast(answer.message || 'Done.');
      await reload();
    } catch (e) {
      toast(e.message, 'error');
    }
  };

  const userRows = users.users.map((u) => h('tr', { 'data-email': u.email },
    h('td', {}, u.email), h('td', {}, u.role), h('td', {}, u.disabled ? 'disabled' : 'active'),
    h('td', {}, u.role === 'admin' ? '' : h('button', {
      type: 'button', class: u.disabled ? '' : 'danger',
      'aria-label': `${u.disabled ? 'Enable' : 'Disable'} ${u.email}`,
      onclick: run(
        () => api(`/admin/users/${u.disabled ? 'enable' : 'disable'}`, { method: 'POST', body: { email: u.email } }),
        u.disabled ? null : `Disable ${u.email}? Their bookings that have not ended are cancelled, and they are signed out at once.`,
      ),
    }, u.disabled ? 'Enable' : 'Disable'))));
  const search = h('input', {
    id: 'account-search', type: 'search', placeholder: 'Search by e-mail', autocomplete: 'off',
    oninput: () => {
      const wanted = search.value.trim().toLowerCase();
      for (const row of userRows) row.hidden = Boolean(wanted) && !row.dataset.email.toLowerCase().includes(wanted);
    },
  });

  const boardRows = devices.devices.map((d) => {
    const state = healthOf[d.id] || { health: 'unknown' };
    const inMaintenance = state.health === 'maintenance';
    const path = `/admin/devices/maintenance/${encodeURIComponent(d.id)}`;
    return h('tr', {},
      h('td', {}, d.name || d.id), h('td', {}, d.model), h('td', {}, d.online ? 'online' : 'offline'),
      h('td', {}, d.in_use ? 'in use' : 'idle'),
      h('td', {}, state.health, state.reason ? ` (${state.reason})` : ''),
      h('td', { class: 'row' },
        h('button', {
          type: 'button', class: 'secondary', 'aria-label': `${inMaintenance ? 'End maintenance of' : 'Put in maintenance'} ${d.id}`,
          onclick: run(() => (inMaintenance
            ? api(path, { method: 'DELETE' })
            : api(path, { method: 'POST', body: { reason: 'Set from the admin page' } })),
          inMaintenance ? null : `Put ${d.name || d.id} in maintenance? It takes no bookings, and its bookings move to a free board of the same model where there is one.`),
        }, inMaintenance ? 'End maintenance' : 'Maintenance'),
        h('a', { class: 'button', href: `#/session/${encodeURIComponent(d.id)}` }, 'Console')));
  });

  const boardName = (id) => lab.devices.find((d) => d.id === id)?.name || id;
  const bookingRows = days.flatMap((data) => data.slots.filter((s) => s.is_booked).map((s) => h('tr', {},
    h('td', {}, boardName(data.device)), h('td', {}, `${clock(s.start)}–${until(s.end)}`), h('td', {}, s.booked_by || '—'),
    h('td', {}, s.status === 'past' ? 'past' : h('button', {
      type: 'button', class: 'danger', 'aria-label': `Cancel ${data.device} ${clock(s.start)}`,
      onclick: run(
        () => api('/cancel-slot', { method: 'POST', body: { slot_id: s.id, date: data.date, device: data.device } }),
        `Cancel ${s.booked_by ? `${s.booked_by}'s` : 'this'} booking of ${clock(s.start)}–${until(s.end)} on ${boardName(data.device)}?`,
      ),
    }, 'Cancel')))));

  const table = (caption, heads, rows, empty) => (rows.length
    ? h('table', {}, h('caption', {}, caption),
      h('thead', {}, h('tr', {}, heads.map((t) => h('th', { scope: 'col' }, t)))), h('tbody', {}, rows))
    : h('p', {}, empty));

  fill(main,
    h('h2', {}, 'Admin'),
    h('section', { class: 'card' }, table(`Today's bookings (${days[0] ? day(days[0].date) : ''}, ${zoneName()})`,
      ['Board', 'Time', 'Booked by', 'Actions'], bookingRows, 'No bookings today.')),
    h('section', { class: 'card' }, table('Boards', ['Board', 'Model', 'Connection', 'Use', 'Health', 'Actions'], boardRows, 'No boards.')),
    h('section', { class: 'card' },
      h('label', { for: 'account-search' }, 'Find an account'), search,
      table('Accounts', ['E-mail', 'Role', 'State', 'Actions'], userRows, 'No accounts.')));
  return () => {};
}
