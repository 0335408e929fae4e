// The app's shell: signing in, the route in the address's hash, and the
// student's pages that need no board (the overview and my bookings). The
// calendar, the session and the admin pages live in their own modules.

import { api, session, slotFeed } from './api.js';
import { h, fill, toast, toastLeavePage, errorLine } from './ui.js';
import { setZone, zoneName, clock, until, when, span } from './time.js';
import { calendarView } from './calendar.js';
import { boardNow, nextFree, currentSlot } from './slots.js';
import { sessionView } from './session.js';
import { adminView } from './admin.js';

const main = document.getElementById('main');
const lab = { devices: [], health: {}, lab: { timezone: null, slot_minutes: 60 } };

/** A board's health as a student reads it. */
const HEALTH_WORDS = { good: 'working', failing: 'out of order', maintenance: 'in maintenance' };

/** Why the server ended the sign-in, shown once on the sign-in page. */
let signedOutBecause = '';

/** What the page currently shows stops its timers and sockets through this. */
let leave = () => {};

/** What every page shows before and after signing in: the zone, and whether this is the demo lab. */
function showLab(health) {
  if (!health) return;
  lab.lab = health.lab || lab.lab;
  lab.health = Object.fromEntries((health.device_health || []).map((d) => [d.id, d]));
  setZone(lab.lab.timezone);
  document.getElementById('zone').textContent = `Times in ${zoneName()}`;
  document.getElementById('demo-banner').hidden = !lab.lab.demo;
}

async function loadLab() {
  const [health, devices] = await Promise.all([api('/health').catch(() => null), api('/devices')]);
  showLab(health);
  // A lab with no boards configured still has its one calendar, `default`.
  lab.devices = devices.devices.length
    ? devices.devices
    : [{ number: 0, id: 'default', name: 'Lab calendar', model: 'no board configured', online: false, calendarOnly: true }];
}

function showNav() {
  const signedIn = Boolean(session.token);
  document.getElementById('nav').hidden = !signedIn;
  document.getElementById('nav-admin').hidden = !session.isAdmin;
  document.getElementById('who').textContent = signedIn ? session.user.email : '';
}

async function route() {
  leave();
  leave = () => {};
  toastLeavePage();
  showNav();
  const hash = location.hash.replace(/^#/, '') || '/';
  const [, page, arg, view] = hash.split('/');
  if (!session.token) {
    signIn();
    return;
  }
  // Open on every page, so a sign-out by the server reaches this one at once.
  slotFeed.connect();
  try {
    if (!lab.devices.length) await loadLab();
    if (page === 'board') leave = await calendarView(main, lab, decodeURIComponent(arg || ''), view === 'week' ? 'week' : 'day');
    else if (page === 'session') leave = await sessionView(main, lab, decodeURIComponent(arg || ''));
    else if (page === 'bookings') leave = await myBookings();
    else if (page === 'admin') leave = await adminView(main, lab);
    else leave = await overview();
  } catch (error) {
    // A refusal that ended the sign-in has already shown the sign-in page.
    if (!session.token) return;
    fill(main, h('h2', {}, 'Something went wrong'), h('p', { class: 'error', role: 'alert' }, error.message));
  }
  main.focus({ preventScroll: true });
}

function signIn() {
  const error = errorLine();
  const email = h('input', { id: 'email', type: 'email', name: 'email', autocomplete: 'username', required: true });
  const password = h('input', {
    id: 'password', type: 'password', name: 'password', autocomplete: 'current-password', required: true, minlength: 6,
  });
  const submit = async (event, mode) => {
    event.preventDefault();
    error.show('');
    const body = { email: email.value, password: password.value };
    try {
      if (mode === 'register') {
        await api('/auth/register', { method: 'POST', body });
        toast('Account created; you are signed in.');
      }
      const answer = await api('/auth/login', { method: 'POST', body });
      session.save(answer.token, answer.user);
      await loadLab();
      route();
    } catch (e) {
      error.show(e.message);
    }
  };
  const { registration, allowed_domains: domains = [] } = lab.lab;
  const who = {
    open: 'New here? Anyone may register with an e-mail address and a password.',
    domains: `New here? Addresses at ${domains.join(' or ')} may register.`,
    closed: 'Accounts are made by the lab\'s admins: ask them for one.',
  }[registration] || '';
  const form = h('form', { class: 'card narrow', onsubmit: (e) => submit(e, 'login') },
    h('h2', {}, 'Sign in'),
    h('label', { for: 'email' }, 'E-mail'), email,
    h('label', { for: 'password' }, 'Password'), password,
    error.el,
    h('div', { class: 'row' },
      h('button', { type: 'submit', id: 'login' }, 'Sign in'),
      registration !== 'closed' && h('button', {
        type: 'button', id: 'register', class: 'secondary', onclick: (e) => submit(e, 'register'),
      }, 'Register')),
    who && h('p', { id: 'who-may-register', class: 'muted' }, who),
    h('p', { id: 'forgotten-password', class: 'muted' },
      'Forgot your password? Ask a lab admin: they can set a new one for you.'));
  fill(main, form);
  if (signedOutBecause) error.show(`You are signed out: ${signedOutBecause}`);
  signedOutBecause = '';
  email.focus();
}

async function overview() {
  const days = await Promise.all(lab.devices.map((d) => api(`/slots?device=${encodeURIComponent(d.id)}`).catch(() => null)));
  const cards = lab.devices.map((device, i) => {
    const viewer = { email: session.user?.email, now: Date.now() };
    const { free, mine, holder } = boardNow(days[i], viewer);
    const next = !free && nextFree(days[i], viewer);
    const health = lab.health[device.id];
    const current = free && days[i] && currentSlot(days[i].slots, viewer.now);
    const bookNow = async () => {
      try {
        await api('/book-slot', { method: 'POST', body: { slot_id: current.id, date: days[i].date, device: device.id } });
        toast(`Booked ${clock(current.start)}–${until(current.end)} on ${device.name || device.id}.`);
        location.hash = `#/session/${encodeURIComponent(device.id)}`;
      } catch (e) {
        toast(e.message, 'error');
      }
    };
    return h('li', { class: 'card board' },
      h('h3', {}, device.name || device.id),
      h('p', { class: 'muted' }, `${device.model} · ${device.id}`),
      h('p', {},
        !device.calendarOnly && h('span', { class: `pill ${device.online ? 'ok' : 'bad'}` }, device.online ? 'online' : 'offline'),
        ' ',
        // "unknown" (never checked: the board has no health check) tells a student nothing.
        health && health.health !== 'unknown' && h('span', { class: `pill health-${health.health}`, title: health.reason || '' },
          HEALTH_WORDS[health.health] || health.health), ' ',
        h('span', { class: `pill ${free ? 'ok' : ''}` }, free ? 'free now' : 'not free now')),
      h('p', {}, holder),
      next && h('p', { class: 'muted' }, `Next free today: ${clock(next.start)}–${until(next.end)}`),
      h('div', { class: 'row' },
        current && !device.calendarOnly && h('button', {
          type: 'button', class: 'book-now', onclick: bookNow,
          'aria-label': `Book ${device.name || device.id} now, ${clock(current.start)}–${until(current.end)}`,
        }, 'Book now'),
        h('a', { class: `button${current ? ' secondary' : ''}`, href: `#/board/${encodeURIComponent(device.id)}` }, 'Calendar'),
        (mine || session.isAdmin) && !device.calendarOnly && h('a', { class: 'button', href: `#/session/${encodeURIComponent(device.id)}` },
          'Open session')));
  });
  fill(main, h('h2', {}, 'Boards'), h('ul', { class: 'cards' }, cards));
  const off = slotFeed.subscribe((m) => {
    if (m.type === 'slots_update') refreshSoon();
  });
  let timer = null;
  const refreshSoon = () => {
    clearTimeout(timer);
    timer = setTimeout(() => { if (location.hash.replace(/^#/, '') in { '': 1, '/': 1 }) route(); }, 300);
  };
  return () => { off(); clearTimeout(timer); };
}

async function myBookings() {
  const answer = await api('/my-bookings');
  const next = answer.bookings.find((b) => Date.parse(b.end) > Date.now());
  const countdown = h('p', { class: 'big', 'aria-live': 'off' });
  const tick = () => {
    if (!next) {
      countdown.textContent = 'No booking ahead.';
      return;
    }
    const start = Date.parse(next.start);
    countdown.textContent = start > Date.now()
      ? `Next session on ${next.device} in ${span(start - Date.now())}`
      : `Your session on ${next.device} is running: ${span(Date.parse(next.end) - Date.now())} left`;
  };
  tick();
  const timer = setInterval(tick, 1000);
  const rows = answer.bookings.map((b) => {
    const running = Date.parse(b.start) <= Date.now();
    return h('tr', {},
      h('td', {}, when(b.start)), h('td', {}, `${clock(b.start)}–${until(b.end)}`), h('td', {}, b.device),
      h('td', { class: 'row' },
        running && h('a', { class: 'button', href: `#/session/${encodeURIComponent(b.device)}` }, 'Open session'),
        h('button', {
          type: 'button', class: 'secondary',
          'aria-label': `Cancel the booking of ${when(b.start)} on ${b.device}`,
          onclick: async () => {
            try {
              await api('/cancel-slot', { method: 'POST', body: { slot_id: b.id, date: b.date, device: b.device } });
              toast(`Cancelled ${when(b.start)}–${until(b.end)} on ${b.device}.`);
              route();
            } catch (e) {
              toast(e.message, 'error');
            }
          },
        }, 'Cancel')));
  });
  fill(main, h('h2', {}, 'My bookings'), countdown,
    rows.length
      ? h('table', {}, h('caption', { class: 'sr' }, 'Your bookings'),
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Day'), h('th', { scope: 'col' }, 'Time'),
          h('th', { scope: 'col' }, 'Board'), h('th', { scope: 'col' }, 'Actions'))),
        h('tbody', {}, rows))
      : h('p', {}, 'You have no bookings. Pick a board on the ', h('a', { href: '#/' }, 'overview'), '.'));
  // A booking an admin cancels or moves (maintenance), or one made in another
  // tab, shows here at once: a change to a day of ours, or a slot now ours.
  const ours = new Set(answer.bookings.map((b) => `${b.device} ${b.date}`));
  let refresh = null;
  const off = slotFeed.subscribe((m) => {
    const touched = m.type === 'booking_moved'
      || (m.type === 'slots_update' && (ours.has(`${m.data.device} ${m.data.date}`)
        || m.data.slots.some((s) => s.booked_by && s.booked_by === session.user?.email)));
    if (!touched) return;
    clearTimeout(refresh);
    refresh = setTimeout(() => { if (location.hash === '#/bookings') route(); }, 300);
  });
  return () => { clearInterval(timer); clearTimeout(refresh); off(); };
}

document.getElementById('logout').addEventListener('click', () => {
  session.clear();
  location.hash = '#/';
  route();
});
window.addEventListener('signed-out', (event) => {
  signedOutBecause = event.detail;
  route();
});
window.addEventListener('hashchange', route);
// The sign-in page names the zone and the demo too: /health needs no login.
api('/health').then(showLab, () => {}).finally(route);
