'use strict';
// Sensor readings: validating a posted batch, and the ReadingRecorded events it becomes.

const crypto = require('node:crypto');
const { Problem } = require('./problem');

/** The sensors a reading may come from, and the unit each one's value is in. */
const UNITS = Object.freeze({ temperature: '°C', vibration: 'mm/s', pressure: 'bar' });
const MAX_ROWS = 1000;
const MAX_ASSET_ID = 200;
/** A reading may be this far ahead of our clock (a device's clock runs a little fast). */
const MAX_FUTURE_MS = 5 * 60 * 1000;
const ROW_FIELDS = new Set(['assetId', 'sensor', 'value', 'time']);
const RFC3339 = new RegExp(
  '^(\\d{4})-(\\d{2})-(\\d{2})[Tt ](\\d{2}):(\\d{2}):(\\d{2})(?:\\.(\\d{1,9}))?' +
    '(?:([Zz])|([+-])(\\d{2}):(\\d{2}))$',
);
const CONTROL = /[\u0000-\u001f\u007f]/;

/**
 * The rows of `{"readings": [...]}`, each checked; the first bad one is a 400 naming its index
 * and field, so nothing of a batch with a bad row is published.
 * @returns {{assetId: string, sensor: string, value: number, time: string}[]}
 */
function parseReadings(body, nowMs = Date.now()) {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new Problem(400, 'the body must be a JSON object: {"readings": [...]}');
  }
  for (const name of Object.keys(body)) {
    if (name !== 'readings') {
      throw new Problem(400, `${name}: unknown field (fields: readings)`, { field: name });
    }
  }
  const rows = body.readings;
  if (!Array.isArray(rows) || rows.length === 0 || rows.length > MAX_ROWS) {
    throw new Problem(400, `readings: must be a list of 1 to ${MAX_ROWS} readings`, {
      field: 'readings',
    });
  }
  return rows.map((row, index) => parseRow(row, index, nowMs));
}

function parseRow(row, index, nowMs) {
  const bad = (field, message) =>
    new Problem(400, `readings[${index}]${field ? `.${field}` : ''}: ${message}`, {
      row: index,
      ...(field ? { field } : {}),
    });
  if (row === null || typeof row !== 'object' || Array.isArray(row)) {
    throw bad('', 'must be an object');
  }
  for (const name of Object.keys(row)) {
    if (!ROW_FIELDS.has(name)) {
      throw bad(name, 'unknown field (fields: assetId, sensor, value, time)');
    }
  }
  const { assetId, sensor, value, time } = row;
  if (
    typeof assetId !== 'string' ||
    assetId.trim() === '' ||
    assetId.length > MAX_ASSET_ID ||
    CONTROL.test(assetId)
  ) {
    throw bad('assetId', `must be a non-empty string of at most ${MAX_ASSET_ID} characters`);
  }
  if (typeof sensor !== 'string' || !Object.hasOwn(UNITS, sensor)) {
    throw bad('sensor', `must be one of ${Object.keys(UNITS).join(', ')}`);
  }
  if (typeof value !== 'number') throw bad('value', 'must be a number');
  if (!Number.isFinite(value)) throw bad('value', 'must be a finite number');
  let at = nowMs;
  if (time !== undefined && time !== null) {
    at = typeof time === 'string' ? parseTime(time) : NaN;
    if (Number.isNaN(at)) throw bad('time', 'must be an RFC 3339 time with a zone (Z or +HH:MM)');
    if (at > nowMs + MAX_FUTURE_MS) throw bad('time', 'is more than 5 minutes in the future');
  }
  return { assetId, sensor, value, time: new Date(at).toISOString() };
}

/** Milliseconds since the epoch of an RFC 3339 time, or NaN if it is not one. */
function parseTime(text) {
  const m = RFC3339.exec(text);
  if (m === null) return NaN;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number);
  const ms = m[7] ? Number(m[7].slice(0, 3).padEnd(3, '0')) : 0;
  if (month < 1 || month > 12 || hour > 23 || minute > 59 || second > 59) return NaN;
  const local = Date.UTC(year, month - 1, day, hour, minute, second, ms);
  if (new Date(local).getUTCDate() !== day) return NaN; // 30 February and the like
  if (m[8]) return local;
  const offset = (Number(m[10]) * 60 + Number(m[11])) * 60 * 1000;
  return m[9] === '+' ? local - offset : local + offset;
}

/**
 * The ReadingRecorded events of a batch, keyed by asset. Every event gets an id, so that the
 * broker stores a batch sent twice once: derived from the caller and its Idempotency-Key when
 * there is one (a client's retry), else random (our own retry after a dropped connection).
 * @param {object} options `idempotencyKey`, `caller` (the token's subject), `headers` (trace)
 */
function readingEvents(rows, { idempotencyKey, caller, headers }) {
  const base = idempotencyKey
    ? crypto.createHash('sha256').update(`${caller}\u0000${idempotencyKey}`).digest('hex')
    : crypto.randomUUID();
  return rows.map((row, index) => ({
    id: `${base}-${index}`,
    key: row.assetId,
    type: 'ReadingRecorded',
    time: row.time,
    headers,
    payload: {
      assetId: row.assetId,
      sensor: row.sensor,
      value: row.value,
      unit: UNITS[row.sensor],
      time: row.time,
    },
  }));
}

module.exports = { UNITS, MAX_ROWS, parseReadings, parseTime, readingEvents };
