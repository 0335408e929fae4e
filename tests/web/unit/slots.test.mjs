// Unit tests of the web app's slot logic (daemon/web/slots.js) under node's
// built-in test runner: `node --test tests/web/unit/` (tests/run.sh runs it).
// They live outside daemon/web/, so build.rs never embeds or serves them.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { LABELS, boardAccess, boardNow, currentSlot, describe, inProgress, nextFree, rememberMine, slotState } from '../../../daemon/web/slots.js';

const DATE = '2026-11-24';
const at = (time) => Date.parse(`${DATE}T${time}Z`);

/** A slot of DATE as /slots gives it: hourly, starting at `hour`. */
function slot(hour, fields = {}) {
  const hh = String(hour).padStart(2, '0');
  const end = hour === 23 ? '2026-11-25T00:00:00Z' : `${DATE}T${String(hour + 1).padStart(2, '0')}:00:00Z`;
  return {
    id: hour,
    start: `${DATE}T${hh}:00:00Z`,
    end,
    is_booked: false,
    booked_by: null,
    status: 'available',
    ...fields,
  };
}

const ADA = 'ada@lab.org';
const viewer = (now, mine = new Set()) => ({ email: ADA, mine, now });

test('a slot is in progress from its start up to, not including, its end', () => {
  assert.equal(inProgress(slot(10), at('09:59:59')), false);
  assert.equal(inProgress(slot(10), at('10:00:00')), true);
  assert.equal(inProgress(slot(10), at('10:59:59')), true);
  assert.equal(inProgress(slot(10), at('11:00:00')), false);
});

test('each state follows from the server status, the booker and the time', () => {
  const now = at('10:30:00');
  assert.equal(slotState(DATE, slot(11), viewer(now)), 'available');
  assert.equal(slotState(DATE, slot(11, { is_booked: true, booked_by: 'bob@lab.org', status: 'booked' }), viewer(now)), 'booked');
  assert.equal(slotState(DATE, slot(11, { is_booked: true, booked_by: ADA, status: 'booked' }), viewer(now)), 'mine');
  assert.equal(slotState(DATE, slot(11, { is_booked: true, status: 'mine' }), viewer(now)), 'mine');
  assert.equal(slotState(DATE, slot(11, { status: 'blocked' }), viewer(now)), 'blocked');
  assert.equal(slotState(DATE, slot(9, { status: 'past' }), viewer(now)), 'past');
});

test('a slot whose end has come is past, whatever the earlier answer said', () => {
  const answeredBefore = slot(10, { is_booked: true, booked_by: ADA, status: 'mine' });
  assert.equal(slotState(DATE, answeredBefore, viewer(at('10:59:59'))), 'mine');
  assert.equal(slotState(DATE, answeredBefore, viewer(at('11:00:00'))), 'past');
  assert.equal(slotState(DATE, slot(10, { status: 'blocked' }), viewer(at('11:00:00'))), 'past');
});

test('under the privacy setting our own booking stays ours through a broadcast without names', () => {
  const mine = new Set();
  rememberMine(mine, { date: DATE, slots: [slot(11, { is_booked: true, status: 'mine' })] }, ADA);
  // The broadcast names nobody: what the page knew holds.
  const anonymous = slot(11, { is_booked: true, booked_by: null, status: 'booked' });
  rememberMine(mine, { date: DATE, slots: [anonymous] }, ADA);
  assert.equal(slotState(DATE, anonymous, viewer(at('10:00:00'), mine)), 'mine');
  // Someone else's booking of a slot that was never ours is theirs.
  assert.equal(slotState(DATE, slot(12, { is_booked: true, status: 'booked' }), viewer(at('10:00:00'), mine)), 'booked');
  // Freed, or named as another's, it is no longer ours.
  rememberMine(mine, { date: DATE, slots: [slot(11)] }, ADA);
  assert.equal(mine.size, 0);
  rememberMine(mine, { date: DATE, slots: [slot(11, { is_booked: true, status: 'mine' })] }, ADA);
  rememberMine(mine, { date: DATE, slots: [slot(11, { is_booked: true, booked_by: 'bob@lab.org', status: 'booked' })] }, ADA);
  assert.equal(mine.size, 0);
});

test('labels and buttons: free slots book, ours cancel, the one in progress says so', () => {
  const now = at('10:30:00');
  assert.deepEqual(describe(DATE, slot(10), viewer(now)), { state: 'available', now: true, label: 'free · now', action: 'Book' });
  assert.deepEqual(describe(DATE, slot(11, { is_booked: true, booked_by: ADA, status: 'booked' }), viewer(now)),
    { state: 'mine', now: false, label: 'yours', action: 'Cancel' });
  assert.deepEqual(describe(DATE, slot(12, { is_booked: true, booked_by: 'bob@lab.org', status: 'booked' }), viewer(now)),
    { state: 'booked', now: false, label: 'booked by bob@lab.org', action: null });
  assert.deepEqual(describe(DATE, slot(12, { is_booked: true, status: 'booked' }), viewer(now)),
    { state: 'booked', now: false, label: 'booked', action: null });
  assert.equal(describe(DATE, slot(9, { status: 'past' }), viewer(now)).action, null);
  assert.equal(describe(DATE, slot(13, { status: 'blocked' }), viewer(now)).action, null);
  for (const state of ['past', 'mine', 'booked', 'available', 'blocked']) assert.ok(LABELS[state], state);
});

test('the slot in progress and the next free one', () => {
  const day = {
    date: DATE,
    slots: [
      slot(9, { status: 'past' }),
      slot(10, { is_booked: true, booked_by: 'bob@lab.org', status: 'booked' }),
      slot(11, { status: 'blocked' }),
      slot(12),
      slot(13),
    ],
  };
  assert.equal(currentSlot(day.slots, at('10:15:00')).id, 10);
  assert.equal(currentSlot(day.slots, at('08:00:00')), undefined);
  assert.equal(nextFree(day, viewer(at('10:15:00'))).id, 12);
  // The slot in progress counts when it is free: "book now".
  assert.equal(nextFree(day, viewer(at('12:30:00'))).id, 12);
  // Past its end it is no longer offered.
  assert.equal(nextFree(day, viewer(at('13:00:00'))).id, 13);
  assert.equal(nextFree(day, viewer(at('14:00:00'))), undefined);
  assert.equal(nextFree(null, viewer(at('10:00:00'))), undefined);
});

test('a board card says who holds the slot in progress', () => {
  const day = (fields) => ({ date: DATE, slots: [slot(10, fields)] });
  const now = viewer(at('10:30:00'));
  assert.deepEqual(boardNow(day({}), now), { free: true, mine: false, holder: 'Nobody holds it now' });
  assert.deepEqual(boardNow(day({ is_booked: true, status: 'mine' }), now), { free: false, mine: true, holder: 'You hold it now' });
  assert.deepEqual(boardNow(day({ is_booked: true, booked_by: 'bob@lab.org', status: 'booked' }), now),
    { free: false, mine: false, holder: 'Held by bob@lab.org' });
  assert.deepEqual(boardNow(day({ is_booked: true, status: 'booked' }), now),
    { free: false, mine: false, holder: 'Booked by someone else' });
  assert.deepEqual(boardNow(day({ status: 'blocked' }), now), { free: false, mine: false, holder: 'Blocked now' });
  // Between the day's slots, or with no answer for the board at all.
  assert.deepEqual(boardNow(day({}), viewer(at('12:00:00'))), { free: false, mine: false, holder: 'Nobody holds it now' });
  assert.deepEqual(boardNow(null, now), { free: false, mine: false, holder: 'Nobody holds it now' });
});

test('the session page tells a non-holder whether the slot in progress is free, taken or closed', () => {
  const now = at('10:30:00');
  const day = (slots) => ({ date: DATE, slots });
  const free = boardAccess(day([slot(10), slot(11)]), viewer(now));
  assert.equal(free.kind, 'free');
  assert.equal(free.slot.id, 10);
  const taken = boardAccess(day([slot(10, { is_booked: true, booked_by: 'bob@lab.org', status: 'booked' }), slot(11)]), viewer(now));
  assert.equal(taken.kind, 'taken');
  assert.equal(taken.next.id, 11, 'the next free slot is offered');
  const blocked = boardAccess(day([slot(10, { status: 'blocked' })]), viewer(now));
  assert.deepEqual([blocked.kind, blocked.next], ['closed', undefined]);
  assert.equal(boardAccess(null, viewer(now)).kind, 'closed');
});
