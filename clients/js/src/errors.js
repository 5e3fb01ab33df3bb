// Error codes (PROTOCOL.md §4 and §5) and the error classes of the client.

/** Error frame codes (§4). */
export const ERROR_CODES = {
  1: 'UnknownCommand',
  2: 'HandlerPanicked',
  3: 'NoReply',
  4: 'BadPayload',
  5: 'Overloaded',
  6: 'ShuttingDown',
  7: 'Application',
  8: 'ReplyTooLarge',
  9: 'ChecksumMismatch',
  10: 'Cancelled',
  11: 'TooLarge',
  12: 'NotLoggedIn',
  13: 'Forbidden',
  14: 'RateLimited',
  15: 'AuthFailed',
  16: 'InvalidArgument',
  17: 'Conflict',
  18: 'NotFound',
  19: 'VersionMismatch',
  20: 'OverBudget',
};

/** GoAway codes (§5). */
export const GOAWAY_CODES = {
  0: 'Normal',
  1: 'ProtocolError',
  2: 'FrameTooLarge',
  3: 'IdleTimeout',
  4: 'ServerFull',
  5: 'ShuttingDown',
  6: 'SlowConsumer',
  7: 'EncryptionRequired',
  8: 'NotAuthorized',
  9: 'MemoryBudget',
  10: 'Kicked',
  11: 'Draining',
};

export function errorCodeName(code) {
  return ERROR_CODES[code] ?? `Other(${code})`;
}

export function goAwayCodeName(code) {
  return GOAWAY_CODES[code] ?? `Other(${code})`;
}

/**
 * A failed call or connection.
 * - kind 'error': the server answered an Error frame; `code` (number) and `codeName` are §4's.
 * - kind 'goaway': the server sent a GoAway; `code` and `codeName` are §5's.
 * - kind 'timeout', 'closed', 'handshake', 'protocol', 'overloaded': raised by this client;
 *   `code` is null and `codeName` repeats the kind in CamelCase.
 */
export class ZsError extends Error {
  constructor(kind, code, codeName, message) {
    super(message);
    this.name = 'ZsError';
    this.kind = kind;
    this.code = code;
    this.codeName = codeName;
  }

  static fromErrorFrame(code, message) {
    return new ZsError('error', code, errorCodeName(code), message);
  }

  static fromGoAway(code, message) {
    const name = goAwayCodeName(code);
    return new ZsError('goaway', code, name, `server closed the connection (${name}): ${message}`);
  }

  static local(kind, message) {
    const codeName = kind.charAt(0).toUpperCase() + kind.slice(1);
    return new ZsError(kind, null, codeName, message);
  }
}

/** A byte sequence that is not a valid frame or DataFrame; `kind` names the WireError. */
export class WireError extends Error {
  constructor(kind, message) {
    super(`${kind}: ${message}`);
    this.name = 'WireError';
    this.kind = kind;
  }
}
