'use strict';
// Trace context: what a request's trace headers are, and the traceparent its events carry.

const crypto = require('node:crypto');

/** Headers copied from the request being handled to the calls made while handling it. */
const TRACE_HEADERS = Object.freeze([
  'traceparent',
  'tracestate',
  'x-request-id',
  'b3',
  'x-b3-traceid',
  'x-b3-spanid',
  'x-b3-parentspanid',
  'x-b3-sampled',
]);
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** The trace headers of an incoming request (Node lower-cases header names). */
function traceHeaders(incoming) {
  const found = {};
  for (const name of TRACE_HEADERS) {
    const value = incoming[name];
    if (typeof value === 'string') found[name] = value;
  }
  return found;
}

/**
 * Headers for the events published while handling a request: a child span of its trace (a new
 * span id in the same trace), or the root of a new trace when the request carried none (as the
 * Python services' events do).
 */
function eventTraceHeaders(trace) {
  const span = crypto.randomBytes(8).toString('hex');
  const parent = TRACEPARENT.exec(trace.traceparent || '');
  if (parent === null || parent[1] === 'ff' || /^0+$/.test(parent[2])) {
    return { traceparent: `00-${crypto.randomBytes(16).toString('hex')}-${span}-01` };
  }
  const headers = { traceparent: `00-${parent[2]}-${span}-${parent[4]}` };
  if (trace.tracestate) headers.tracestate = trace.tracestate;
  return headers;
}

module.exports = { TRACE_HEADERS, traceHeaders, eventTraceHeaders };
