'use strict';
// Latency of a running asset-consumer: sequential requests on one kept-alive connection.
//
//   node asset-consumer/bench.js PORT [COUNT]
//
// Measures GET /healthz, a batch refused for a bad row (400), and a one-row batch for asset
// `pump-1` (202 when the app reaches a broker and an asset-mgr-ms that knows pump-1).

const http = require('node:http');

const [port, count = '5000'] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const claims = JSON.stringify({ sub: 'bench', roles: ['device'] });
const token = Buffer.from(claims).toString('base64url');

function call(method, path, body) {
  return new Promise((resolve, reject) => {
    const headers = { 'x-jwt-payload': token };
    if (body) headers['content-length'] = Buffer.byteLength(body);
    const req = http.request({ host: '127.0.0.1', port, method, path, agent, headers }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function measure(name, send) {
  for (let i = 0; i < 500; i++) await send();
  const micros = [];
  const statuses = new Set();
  for (let i = 0; i < Number(count); i++) {
    const start = process.hrtime.bigint();
    statuses.add(await send());
    micros.push(Number(process.hrtime.bigint() - start) / 1000);
  }
  micros.sort((a, b) => a - b);
  const at = (q) => micros[Math.floor(q * (micros.length - 1))].toFixed(0);
  console.log(
    `${name} [${[...statuses].join(',')}]: ${micros.length} requests, ` +
      `p50 ${at(0.5)} us, p90 ${at(0.9)} us, p99 ${at(0.99)} us`,
  );
}

async function main() {
  const row = (value) =>
    JSON.stringify({ readings: [{ assetId: 'pump-1', sensor: 'temperature', value }] });
  await measure('GET /healthz', () => call('GET', '/healthz'));
  await measure('POST a bad row', () => call('POST', '/assetconsumer/readings', row('hot')));
  await measure('POST one reading', () => call('POST', '/assetconsumer/readings', row(61.5)));
  agent.destroy();
}

main();
