// zserver JavaScript client: see README.md.
export { connect, Connection, anonymousKeyPair } from './client.js';
export {
  encodeDataFrame, decodeDataFrame, Typed, I8, I16, I32, I64, U8, U16, U32, U64, F32, F64,
  DEFAULT_LIMITS,
} from './dataframe.js';
export {
  Kind, Flags, MAX_FRAME_LEN, encodeFrame, decodeFrame, decodeHeader, encodeCallBody,
  decodeCallBody, unlz4, FrameReader, encodeMessage, decodeMessage,
} from './frame.js';
export { ZsError, WireError, ERROR_CODES, GOAWAY_CODES } from './errors.js';
export { generateKeyPair, fingerprint } from './noise.js';
export { Rows, Watch, decodeRecord, unpackRows } from './db.js';
