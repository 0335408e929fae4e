// What a slot is to the person looking at it: past, blocked, theirs, someone
// else's or free; whether it is in progress; what its label and button say;
// and which slot is the next free one. Pure functions of a day's slots (as
// /slots and slots_update give them), the viewer and the time, with no page
// and no network, so node's test runner checks them (tests/web/unit/).

/** The word each state shows in a calendar. */
export const LABELS = { past: 'past', mine: 'yours', booked: 'booked', available: 'free', blocked: 'blocked' };

/** The key of a slot in the set of the viewer's own bookings: "YYYY-MM-DD/id". */
export const slotKey = (date, slot) => `${date}/${slot.id}`;

/** Whether `slot` is in progress at `now` (milliseconds since the epoch). */
export function inProgress(slot, now) {
  return Date.parse(slot.start) <= now && now < Date.parse(slot.end);
}

/**
 * The state of `slot` of the day `date` for `viewer` ({ email, mine, now }):
 * 'past', 'blocked', 'mine', 'booked' or 'available'. A slot whose end has
 * come is past even if the answer was given before it ended. `mine` holds
 * the keys of the viewer's own bookings the page knows of, because under
 * the lab's privacy setting a broadcast carries no e-mail, not even ours.
 */
export function slotState(date, slot, viewer) {
  if (slot.status === 'past' || Date.parse(slot.end) <= viewer.now) return 'past';
  if (slot.status === 'blocked') return 'blocked';
  const ours = slot.booked_by === viewer.email || Boolean(viewer.mine?.has(slotKey(date, slot)));
  if (slot.status === 'mine' || (slot.is_booked && ours)) return 'mine';
  return slot.is_booked ? 'booked' : 'available';
}

/**
 * Everything a calendar shows of a slot: its state, whether it is in
 * progress, its label ("booked by bob@lab.org · now") and its button
 * ('Book', 'Cancel' or null).
 */
export function describe(date, slot, viewer) {
  const state = slotState(date, slot, viewer);
  const now = inProgress(slot, viewer.now);
  const who = state === 'booked' && slot.booked_by ? ` by ${slot.booked_by}` : '';
  const action = { available: 'Book', mine: 'Cancel' }[state] || null;
  return { state, now, label: `${LABELS[state]}${who}${now ? ' · now' : ''}`, action };
}

/**
 * Brings `mine` (a Set of slot keys) up to date with a day's answer or
 * broadcast: a slot the server marks as ours is added; one that is free, or
 * named as someone else's, is dropped. A booked slot without a name (the
 * privacy setting) keeps what the page knew.
 */
export function rememberMine(mine, day, email) {
  for (const slot of day.slots) {
    const key = slotKey(day.date, slot);
    if (slot.status === 'mine') mine.add(key);
    else if (!slot.is_booked || (slot.booked_by && slot.booked_by !== email)) mine.delete(key);
  }
  return mine;
}

/** The slot of a day's list in progress at `now`, if any. */
export function currentSlot(slots, now) {
  return slots.find((slot) => inProgress(slot, now));
}

/**
 * The first slot of `day` the viewer could book from `now` on (the one in
 * progress included), if any; none for a day that did not load (null).
 */
export function nextFree(day, viewer) {
  return day?.slots.find((slot) => slotState(day.date, slot, viewer) === 'available');
}

/**
 * What a board's card says about its slot in progress: whether it is free
 * now, whether it is the viewer's, and who holds it, in words. A day that
 * did not load (null) says nobody holds it and it is not free.
 */
export function boardNow(day, viewer) {
  const slot = day ? currentSlot(day.slots, viewer.now) : undefined;
  const state = slot ? slotState(day.date, slot, viewer) : null;
  let holder = 'Nobody holds it now';
  if (state === 'mine') holder = 'You hold it now';
  else if (state === 'booked') holder = slot.booked_by ? `Held by ${slot.booked_by}` : 'Booked by someone else';
  else if (state === 'blocked') holder = 'Blocked now';
  return { free: state === 'available', mine: state === 'mine', holder };
}

/**
 * What the session page tells someone who does not hold the board now:
 * 'free' (the slot in progress may be booked), 'taken' (someone else holds
 * it) or 'closed' (blocked, or no slot in progress), with that slot and the
 * next one the viewer could book today (`next`, none when there is none).
 * A day that did not load (null) is 'closed' with nothing next.
 */
export function boardAccess(day, viewer) {
  const slot = day ? currentSlot(day.slots, viewer.now) : undefined;
  const state = slot ? slotState(day.date, slot, viewer) : null;
  const next = nextFree(day, viewer);
  if (state === 'available') return { kind: 'free', slot, next };
  if (state === 'booked' || state === 'mine') return { kind: 'taken', slot, next };
  return { kind: 'closed', slot, next };
}
