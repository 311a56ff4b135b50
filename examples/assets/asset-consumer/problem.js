'use strict';
// A request the service refuses, and how it is answered: a status and `{"error", ...details}`.

class Problem extends Error {
  /**
   * @param {number} status the HTTP status to answer with
   * @param {string} error what is wrong, for a person to read
   * @param {object} [details] more fields of the answer (`row`, `field`)
   * @param {object} [headers] more response headers (`retry-after`)
   */
  constructor(status, error, details = {}, headers = {}) {
    super(error);
    this.status = status;
    this.error = error;
    this.details = details;
    this.headers = headers;
  }

  body() {
    return { error: this.error, ...this.details };
  }
}

module.exports = { Problem };
