// Unit tests of the camera stream reader (daemon/web/mjpeg.js) under node's
// built-in test runner: `node --test tests/web/unit/`.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { PartReader, framesPerSecond, stateText } from '../../../daemon/web/mjpeg.js';

const bytes = (text) => new TextEncoder().encode(text);
const part = (type, body) => `--rerodframe\r\nContent-Type: ${type}\r\nContent-Length: ${body.length}\r\n\r\n${body}\r\n`;

test('parts come out whole however the stream is cut', () => {
  const stream = bytes(part('image/jpeg', 'one--rerodfram') + part('image/jpeg', 'two') +
    part('application/json', '{"code":"session_ended"}') + '--rerodframe--\r\n');
  for (const size of [1, 2, 5, 17, stream.length]) {
    const reader = new PartReader('rerodframe');
    const parts = [];
    for (let i = 0; i < stream.length; i += size) parts.push(...reader.push(stream.subarray(i, i + size)));
    assert.deepEqual(parts.map((p) => [p.type, new TextDecoder().decode(p.bytes)]), [
      ['image/jpeg', 'one--rerodfram'], ['image/jpeg', 'two'], ['application/json', '{"code":"session_ended"}'],
    ], `chunks of ${size}`);
    assert.equal(reader.end, true);
  }
});

test('the frame rate counts the last second and states read as words', () => {
  assert.equal(framesPerSecond([0, 100, 1500, 1900, 2000], 2000), 3);
  assert.equal(stateText('offline'), 'Camera offline: reconnecting…');
  assert.equal(stateText('live'), 'Live');
});
