/**
 * The WebSocket the client runs on: the subset of the browser's `WebSocket` (and of the
 * `ws` package's, for Node) that it uses. Each binary message carries exactly one complete
 * protocol frame, byte-identical to a TCP frame, length prefix included.
 */

export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- both DOM and ws event types must fit
  addEventListener(type: "open" | "message" | "close" | "error", listener: (event: any) => void): void;
}

/** `globalThis.WebSocket` in a browser; `WebSocket` from the `ws` package in Node. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** WebSocket readyState OPEN. */
export const SOCKET_OPEN = 1;

/** The bytes of a binary message, or null for a text message (which the protocol never uses). */
export function messageBytes(data: unknown): Uint8Array | null {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
}

export function defaultWebSocket(): WebSocketConstructor {
  const native = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (!native) {
    throw new TypeError("no global WebSocket: pass one in the options (in Node: `import WebSocket from \"ws\"`)");
  }
  return native;
}
