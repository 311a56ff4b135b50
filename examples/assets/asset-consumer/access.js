'use strict';
// Who may post readings: the claims of the verified token the sidecar passes on.

const { Problem } = require('./problem');

/** Where the sidecar puts a verified token's claims (base64url JSON); a client's own is dropped. */
const JWT_PAYLOAD_HEADER = 'x-jwt-payload';
const WRITER_ROLES = Object.freeze(['device', 'admin']);
const WRITE_PERMISSION = 'readings:write';

/** The token's claims; 401 when the request carried no (readable) token. */
function claims(headers) {
  const encoded = headers[JWT_PAYLOAD_HEADER];
  if (typeof encoded !== 'string' || encoded === '') {
    throw new Problem(401, 'log in first: posting readings needs a bearer token');
  }
  let payload;
  try {
    payload = JSON.parse(Buffer.from(encoded, 'base64url').toString('utf8'));
  } catch {
    payload = null;
  }
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
    throw new Problem(401, "the token's claims cannot be read");
  }
  return payload;
}

function listClaim(value) {
  if (Array.isArray(value)) return value;
  return typeof value === 'string' ? value.split(' ') : [];
}

/**
 * The caller's claims if it may write readings: the device or admin role, or the readings:write
 * permission (the auth service issues it as `permission`; `permissions` is read too). 403 else.
 */
function requireWriter(headers) {
  const found = claims(headers);
  const roles = listClaim(found.roles);
  const permissions = [...listClaim(found.permission), ...listClaim(found.permissions)];
  const writer = WRITER_ROLES.some((role) => roles.includes(role));
  if (!writer && !permissions.includes(WRITE_PERMISSION)) {
    throw new Problem(
      403,
      `posting readings needs the device or admin role, or the ${WRITE_PERMISSION} permission`,
    );
  }
  return found;
}

module.exports = { JWT_PAYLOAD_HEADER, claims, requireWriter };
