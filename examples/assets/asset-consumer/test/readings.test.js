'use strict';
// Unit tests of the pure parts (`node --test asset-consumer/test/`): rows, ids, trace, claims.

const assert = require('node:assert/strict');
const { test } = require('node:test');
const { requireWriter } = require('../access');
const { bypassFromEnv, proxyFromEnv } = require('../mesh');
const { parseReadings, parseTime, readingEvents } = require('../readings');
const { eventTraceHeaders, traceHeaders } = require('../trace');

const NOW = Date.parse('2026-06-01T12:00:00Z');
const row = (fields) => ({ assetId: 'a1', sensor: 'temperature', value: 60, ...fields });
const refusal = (body) => {
  try {
    parseReadings(body, NOW);
  } catch (problem) {
    return { status: problem.status, ...problem.body() };
  }
  assert.fail('accepted');
};

test('a valid batch keeps its rows and stamps missing times with now', () => {
  const readings = [row(), row({ sensor: 'pressure', value: -1.5e-3 })];
  const rows = parseReadings({ readings }, NOW);
  assert.deepEqual(rows[1], {
    assetId: 'a1',
    sensor: 'pressure',
    value: -1.5e-3,
    time: '2026-06-01T12:00:00.000Z',
  });
});

test('the first bad row is named with its index and field', () => {
  const readings = [row(), row(), row(), row({ value: '61' })];
  assert.deepEqual(refusal({ readings }), {
    status: 400,
    error: 'readings[3].value: must be a number',
    row: 3,
    field: 'value',
  });
  assert.equal(refusal({ readings: [row({ sensor: 'humidity' })] }).field, 'sensor');
  assert.equal(refusal({ readings: [row({ assetId: ' ' })] }).field, 'assetId');
  assert.equal(refusal({ readings: [row({ extra: 1 })] }).field, 'extra');
  assert.equal(
    refusal({ readings: [row({ value: Infinity })] }).error,
    'readings[0].value: must be a finite number',
  );
  assert.equal(refusal({ readings: [row({ value: true })] }).field, 'value');
  assert.deepEqual(refusal({ readings: [null] }), {
    status: 400,
    error: 'readings[0]: must be an object',
    row: 0,
  });
});

test('the batch itself must hold 1 to 1000 rows', () => {
  assert.equal(refusal({ readings: [] }).field, 'readings');
  assert.equal(refusal({ readings: Array(1001).fill(row()) }).field, 'readings');
  assert.equal(refusal([]).status, 400);
  assert.equal(refusal({ readings: [row()], more: 1 }).field, 'more');
  assert.equal(parseReadings({ readings: Array(1000).fill(row()) }, NOW).length, 1000);
});

test('times are RFC 3339 with a zone, real dates, and not far in the future', () => {
  assert.equal(parseTime('2026-01-05T10:00:00.5+01:00'), Date.parse('2026-01-05T09:00:00.500Z'));
  assert.equal(parseTime('2026-01-05t10:00:00.123456789z'), Date.parse('2026-01-05T10:00:00.123Z'));
  assert.equal(parseTime('2026-01-05 10:00:00-02:30'), Date.parse('2026-01-05T12:30:00Z'));
  const bad = ['2026-01-05T10:00:00', '2026-02-30T00:00:00Z', '2026-01-05T24:00:00Z', 'now'];
  for (const text of [...bad, '']) {
    assert.ok(Number.isNaN(parseTime(text)), text);
  }
  assert.equal(refusal({ readings: [row({ time: 1767000000 })] }).field, 'time');
  assert.match(refusal({ readings: [row({ time: '2026-06-01T12:06:00Z' })] }).error, /future/);
  const [late] = parseReadings({ readings: [row({ time: '2026-06-01T12:04:00Z' })] }, NOW);
  assert.equal(late.time, '2026-06-01T12:04:00.000Z');
});

test('an idempotency key gives the same ids again, per caller; without one they are new', () => {
  const rows = parseReadings({ readings: [row(), row({ sensor: 'vibration' })] }, NOW);
  const ids = (options) => readingEvents(rows, { headers: {}, ...options }).map((e) => e.id);
  const first = ids({ idempotencyKey: 'k1', caller: 'd1' });
  assert.deepEqual(ids({ idempotencyKey: 'k1', caller: 'd1' }), first);
  assert.notDeepEqual(ids({ idempotencyKey: 'k1', caller: 'd2' }), first);
  assert.notDeepEqual(ids({ caller: 'd1' }), ids({ caller: 'd1' }));
  assert.equal(new Set(first).size, 2);
  const [event] = readingEvents(rows, { caller: 'd1', headers: { traceparent: 'x' } });
  assert.deepEqual(
    { key: event.key, type: event.type, unit: event.payload.unit, headers: event.headers },
    { key: 'a1', type: 'ReadingRecorded', unit: '°C', headers: { traceparent: 'x' } },
  );
});

test('events continue the request trace with a span of their own, or start one', () => {
  const parent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
  const incoming = { traceparent: parent, tracestate: 'a=1', 'x-request-id': 'r', other: 'no' };
  const trace = traceHeaders(incoming);
  assert.deepEqual(Object.keys(trace), ['traceparent', 'tracestate', 'x-request-id']);
  const child = eventTraceHeaders(trace);
  assert.match(child.traceparent, /^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/);
  assert.notEqual(child.traceparent, parent);
  assert.equal(child.tracestate, 'a=1');
  const root = eventTraceHeaders({ traceparent: 'garbage' }).traceparent;
  assert.match(root, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
});

test('devices, admins and holders of readings:write may post; others are refused', () => {
  const claims = (value) => ({
    'x-jwt-payload': Buffer.from(JSON.stringify(value)).toString('base64url'),
  });
  const status = (headers) => {
    try {
      requireWriter(headers);
      return 200;
    } catch (problem) {
      return problem.status;
    }
  };
  assert.equal(status({}), 401);
  assert.equal(status({ 'x-jwt-payload': '!!!' }), 401);
  assert.equal(status(claims({ roles: ['device'] })), 200);
  assert.equal(status(claims({ roles: ['admin'] })), 200);
  assert.equal(status(claims({ roles: ['user'], permission: ['readings:write'] })), 200);
  const spaced = { roles: ['user'], permissions: 'assets:write readings:write' };
  assert.equal(status(claims(spaced)), 200);
  assert.equal(status(claims({ roles: ['user'], permission: ['assets:write'] })), 403);
});

test('the proxy comes from HTTP_PROXY, and NO_PROXY exempts names and domains', () => {
  assert.deepEqual(proxyFromEnv({ HTTP_PROXY: 'http://127.0.0.1:15001' }), {
    host: '127.0.0.1',
    port: 15001,
  });
  assert.deepEqual(proxyFromEnv({ http_proxy: '127.0.0.1:9' }), { host: '127.0.0.1', port: 9 });
  assert.equal(proxyFromEnv({}), null);
  const bypass = bypassFromEnv({ NO_PROXY: '127.0.0.1,localhost,.internal' });
  assert.ok(bypass('127.0.0.1') && bypass('LOCALHOST') && bypass('a.internal'));
  assert.ok(!bypass('asset-mgr-ms-svc') && !bypass('notinternal'));
});
