'use strict';
// Which assets exist and are active, as asset-mgr-ms says, remembered briefly.

const { UpstreamError } = require('./mesh');

/** What a lookup found: an active asset, a retired one, or none by that id. */
const ACTIVE = 'active';
const RETIRED = 'retired';
const UNKNOWN = 'unknown';

class AssetDirectory {
  /**
   * @param {import('./mesh').MeshClient} client
   * @param {object} options `baseUrl` of asset-mgr-ms, `activeTtlMs` (how long an active asset
   *   is believed, 10 s), `absentTtlMs` (an unknown or retired one, 2 s: a new asset is usable
   *   soon), `maxEntries` (10,000; the oldest go first), `concurrency` (lookups at once, 16)
   */
  constructor(
    client,
    { baseUrl, activeTtlMs = 10000, absentTtlMs = 2000, maxEntries = 10000, concurrency = 16 },
  ) {
    this.client = client;
    this.baseUrl = baseUrl.replace(/\/$/, '');
    this.activeTtlMs = activeTtlMs;
    this.absentTtlMs = absentTtlMs;
    this.maxEntries = maxEntries;
    this.concurrency = concurrency;
    /** @type {Map<string, {verdict: string, expires: number}>} */
    this.cache = new Map();
    /** @type {Map<string, Promise<string>>} lookups in flight, shared by concurrent batches */
    this.pending = new Map();
  }

  /**
   * The verdict on each distinct id (a Map), looking up those not cached, a few at a time.
   * Throws UpstreamError when asset-mgr-ms cannot say.
   */
  async verdicts(assetIds, headers) {
    const now = Date.now();
    const found = new Map();
    const missing = [];
    for (const id of new Set(assetIds)) {
      const cached = this.cache.get(id);
      if (cached !== undefined && cached.expires > now) found.set(id, cached.verdict);
      else missing.push(id);
    }
    let next = 0;
    const worker = async () => {
      while (next < missing.length) {
        const id = missing[next++];
        found.set(id, await this.lookup(id, headers));
      }
    };
    const workers = Math.min(this.concurrency, missing.length);
    await Promise.all(Array.from({ length: workers }, worker));
    return found;
  }

  /** One asset's verdict, asked of asset-mgr-ms (one call per id however many ask at once). */
  lookup(id, headers) {
    let promise = this.pending.get(id);
    if (promise === undefined) {
      promise = this.#ask(id, headers).finally(() => this.pending.delete(id));
      this.pending.set(id, promise);
    }
    return promise;
  }

  async #ask(id, headers) {
    const url = `${this.baseUrl}/assetmgrms/assets/${encodeURIComponent(id)}`;
    const answer = await this.client.request('GET', url, {
      headers: { ...headers, accept: 'application/json' },
    });
    let verdict;
    if (answer.status === 404) {
      verdict = UNKNOWN;
    } else if (answer.status === 200) {
      let asset = null;
      try {
        asset = JSON.parse(answer.body.toString('utf8'));
      } catch {
        throw new UpstreamError(`asset-mgr-ms answered asset ${id} with something not JSON`);
      }
      verdict = asset !== null && asset.status === RETIRED ? RETIRED : ACTIVE;
    } else {
      const reason = answer.headers['x-gossamer-reason'] || answer.body.toString('utf8', 0, 200);
      throw new UpstreamError(`asset-mgr-ms answered ${answer.status} for asset ${id}: ${reason}`);
    }
    this.#remember(id, verdict);
    return verdict;
  }

  #remember(id, verdict) {
    const ttl = verdict === ACTIVE ? this.activeTtlMs : this.absentTtlMs;
    this.cache.delete(id);
    if (this.cache.size >= this.maxEntries) {
      this.cache.delete(this.cache.keys().next().value);
    }
    this.cache.set(id, { verdict, expires: Date.now() + ttl });
  }
}

module.exports = { AssetDirectory, ACTIVE, RETIRED, UNKNOWN };
