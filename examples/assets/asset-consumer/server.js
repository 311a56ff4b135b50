'use strict';
// asset-consumer: takes sensor readings over HTTP and publishes them as ReadingRecorded events.
//
// POST /assetconsumer/readings {"readings": [{"assetId", "sensor", "value", "time"?}, ...]}
// checks every row, asks asset-mgr-ms (through the sidecar) that each asset exists and is not
// retired, and publishes one event per row to the `readings` topic in one batch: 202
// {"accepted": N, "duplicates": D}. Errors are JSON `{"error", "row"?, "field"?}`.
// Environment: PORT, GOSSAMER_EVENTS (the broker), ASSET_MGR_URL, HTTP_PROXY, NO_PROXY.

const http = require('node:http');
const { requireWriter } = require('./access');
const { AssetDirectory, RETIRED, UNKNOWN } = require('./assets');
const { MeshClient, UpstreamError } = require('./mesh');
const { Problem } = require('./problem');
const { parseReadings, readingEvents } = require('./readings');
const { eventTraceHeaders, traceHeaders } = require('./trace');

const SERVICE = process.env.GOSSAMER_SERVICE || 'asset-consumer';
const MAX_BODY_BYTES = 1024 * 1024;
const MAX_IDEMPOTENCY_KEY = 200;
const DRAIN_DEADLINE_MS = 10000;
const READINGS_PATH = '/assetconsumer/readings';
const PRINTABLE = /^[\u0021-\u007e]+$/;

/** Everything a request needs, built once from the environment. */
function configure(env) {
  const client = new MeshClient({ env });
  return {
    client,
    broker: (env.GOSSAMER_EVENTS || 'http://event-broker-svc:8080').replace(/\/$/, ''),
    assets: new AssetDirectory(client, {
      baseUrl: env.ASSET_MGR_URL || 'http://asset-mgr-ms-svc:8080',
    }),
    draining: false,
  };
}

async function handle(state, req, res) {
  const path = req.url.split('?', 1)[0];
  if (path === '/healthz' && req.method === 'GET') {
    const status = state.draining ? 503 : 200;
    return reply(res, status, { status: state.draining ? 'draining' : 'ok', service: SERVICE });
  }
  if (path !== READINGS_PATH) throw new Problem(404, `no route ${path}`);
  if (req.method !== 'POST') {
    throw new Problem(405, `${req.method} ${path}: only POST`, {}, { allow: 'POST' });
  }
  return postReadings(state, req, res);
}

async function postReadings(state, req, res) {
  const caller = requireWriter(req.headers);
  const idempotencyKey = req.headers['idempotency-key'];
  if (
    idempotencyKey !== undefined &&
    (idempotencyKey.length > MAX_IDEMPOTENCY_KEY || !PRINTABLE.test(idempotencyKey))
  ) {
    throw new Problem(400, `Idempotency-Key: at most ${MAX_IDEMPOTENCY_KEY} printable characters`, {
      field: 'Idempotency-Key',
    });
  }
  const rows = parseReadings(await readJson(req));
  const trace = traceHeaders(req.headers);
  await checkAssets(state, rows, trace);
  const events = readingEvents(rows, {
    idempotencyKey,
    caller: typeof caller.sub === 'string' ? caller.sub : '',
    headers: eventTraceHeaders(trace),
  });
  const duplicates = await publish(state, 'readings', events, trace);
  return reply(res, 202, { accepted: events.length, duplicates });
}

/** The request body as JSON: 413 beyond MAX_BODY_BYTES, 400 when it does not parse. */
function readJson(req) {
  const declared = Number(req.headers['content-length']);
  if (declared > MAX_BODY_BYTES) {
    return Promise.reject(tooLarge(`the body is ${declared} bytes`));
  }
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        req.pause();
        reject(tooLarge(`the body is more than ${MAX_BODY_BYTES} bytes`));
      } else {
        chunks.push(chunk);
      }
    });
    req.on('error', reject);
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch (error) {
        reject(new Problem(400, `the body is not JSON: ${error.message}`));
      }
    });
  });
}

function tooLarge(what) {
  // The rest of the body is not read: the connection closes after the answer.
  const error = `${what}; at most ${MAX_BODY_BYTES} are taken`;
  return new Problem(413, error, {}, { connection: 'close' });
}

/** 422 naming the first row whose asset is unknown or retired; 503 if asset-mgr-ms cannot say. */
async function checkAssets(state, rows, trace) {
  let verdicts;
  try {
    verdicts = await state.assets.verdicts(
      rows.map((row) => row.assetId),
      trace,
    );
  } catch (error) {
    throw unavailable('asset-mgr-ms', error);
  }
  for (const [index, row] of rows.entries()) {
    const verdict = verdicts.get(row.assetId);
    if (verdict === UNKNOWN || verdict === RETIRED) {
      const why =
        verdict === UNKNOWN ? `no asset ${row.assetId}` : `asset ${row.assetId} is retired`;
      throw new Problem(422, `readings[${index}].assetId: ${why}`, {
        row: index,
        field: 'assetId',
      });
    }
  }
}

/** Publish a batch in one request; the number the broker already held (a retried batch). */
async function publish(state, topic, events, trace) {
  let answer;
  try {
    answer = await state.client.request('POST', `${state.broker}/topics/${topic}/publish`, {
      headers: { ...trace, accept: 'application/json' },
      body: JSON.stringify({ events }),
    });
  } catch (error) {
    throw unavailable('the event broker', error);
  }
  if (answer.status !== 200) {
    const reason = answer.headers['x-gossamer-reason'] || answer.body.toString('utf8', 0, 300);
    const status = answer.status >= 500 || answer.status === 429 ? 503 : 502;
    throw new Problem(
      status,
      `the event broker refused the readings (${answer.status}): ${reason}`,
      {},
      status === 503 ? { 'retry-after': '1' } : {},
    );
  }
  const { results } = JSON.parse(answer.body.toString('utf8'));
  return results.filter((result) => result.duplicate).length;
}

function unavailable(who, error) {
  if (!(error instanceof UpstreamError)) throw error;
  return new Problem(503, `${who} is unavailable: ${error.message}`, {}, { 'retry-after': '1' });
}

function reply(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

function replyProblem(req, res, error) {
  const problem =
    error instanceof Problem ? error : new Problem(500, `internal error: ${error.message}`);
  console.error(`${SERVICE}: ${req.method} ${req.url} ${problem.status}: ${problem.error}`);
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const reason = problem.error.slice(0, 200).replace(/[^\u0020-\u007e]/g, '?');
  reply(res, problem.status, problem.body(), { 'x-gossamer-reason': reason, ...problem.headers });
}

/** Serve until SIGTERM or SIGINT: then stop accepting, finish what is in flight, exit. */
function main() {
  const state = configure(process.env);
  let inFlight = 0;
  const server = http.createServer({ noDelay: true, keepAliveTimeout: 5000 }, (req, res) => {
    inFlight += 1;
    res.on('close', () => {
      inFlight -= 1;
      if (state.draining) server.closeIdleConnections();
    });
    if (state.draining) res.setHeader('connection', 'close');
    handle(state, req, res).catch((error) => replyProblem(req, res, error));
  });
  server.on('clientError', (error, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
  });
  const stop = (signal) => {
    if (state.draining) return;
    state.draining = true;
    console.error(`${SERVICE}: ${signal}: finishing ${inFlight} requests in flight`);
    server.close(() => {
      state.client.close();
      process.exit(0);
    });
    server.closeIdleConnections();
    setTimeout(() => {
      console.error(`${SERVICE}: ${inFlight} requests still in flight after the deadline`);
      server.closeAllConnections();
      process.exit(1);
    }, DRAIN_DEADLINE_MS).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  const port = Number(process.env.PORT || 8080);
  server.listen(port, '127.0.0.1', () => {
    console.error(`${SERVICE}: listening on 127.0.0.1:${server.address().port}`);
  });
}

if (require.main === module) main();

module.exports = { configure, handle };
