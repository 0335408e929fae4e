// Times as the lab keeps them: every time is shown in the lab's zone, and the
// zone is named, whatever the browser's own zone is.

let zone = null;
let timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
let dayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'short', day: 'numeric', month: 'short' });

/** Sets the lab's zone (an IANA name, or null to show the slots' own offsets). */
export function setZone(name) {
  zone = name;
  const options = name ? { timeZone: name } : {};
  timeFormat = new Intl.DateTimeFormat(undefined, { ...options, hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
  dayFormat = new Intl.DateTimeFormat(undefined, { ...options, weekday: 'short', day: 'numeric', month: 'short' });
}

/** The zone's name for labels ("Europe/Berlin"). */
export function zoneName() {
  return zone || 'the lab\'s local time';
}

/** "14:00" for an RFC 3339 time, in the lab's zone. */
export function clock(iso) {
  if (!zone) return iso.slice(11, 16);
  return timeFormat.format(new Date(iso));
}

/**
 * The end of a span of time: as `clock`, but "24:00" for a midnight end,
 * so a slot that fills a day reads 00:00–24:00 rather than 00:00–00:00.
 */
export function until(iso) {
  const time = clock(iso);
  return time === '00:00' ? '24:00' : time;
}

/** "Mon 30 Nov" for a `YYYY-MM-DD` date (a calendar day, no zone). */
export function day(date) {
  const [y, m, d] = date.split('-').map(Number);
  return new Intl.DateTimeFormat(undefined, { weekday: 'short', day: 'numeric', month: 'short', timeZone: 'UTC' })
    .format(new Date(Date.UTC(y, m - 1, d)));
}

/** "Tue 1 Dec, 09:00" for an RFC 3339 time. */
export function when(iso) {
  return `${dayFormat.format(new Date(iso))}, ${clock(iso)}`;
}

/** The `YYYY-MM-DD` `n` days after `date`. */
export function addDays(date, n) {
  const [y, m, d] = date.split('-').map(Number);
  return new Date(Date.UTC(y, m - 1, d + n)).toISOString().slice(0, 10);
}

/** The Monday on or before `date` (`YYYY-MM-DD`): where its week starts. */
export function weekStart(date) {
  const [y, m, d] = date.split('-').map(Number);
  const weekday = new Date(Date.UTC(y, m - 1, d)).getUTCDay();
  return addDays(date, -((weekday + 6) % 7));
}

/** "1 h 05 min", "4:59", "0:07" for a span in milliseconds. */
export function span(ms) {
  const total = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (h > 24) return `${Math.floor(h / 24)} d ${h % 24} h`;
  if (h > 0) return `${h} h ${String(m).padStart(2, '0')} min`;
  return `${m}:${String(s).padStart(2, '0')}`;
}
