/**
 * A WebSocket-to-TCP bridge for tests, standing in for the daemon's own WebSocket
 * listener: each binary WebSocket message is written to a TCP connection to the daemon,
 * and the TCP byte stream is cut into frames, one WebSocket message each. It exercises the
 * client against the real daemon's protocol before the listener exists.
 */
import { connect as tcpConnect, Socket } from "node:net";
import { WebSocketServer, WebSocket } from "ws";
import { FrameSplitter } from "../../src/codec/index.js";

export class TcpBridge {
  private readonly sockets = new Set<Socket>();

  private constructor(private readonly server: WebSocketServer, readonly port: number) {}

  static start(port: number, daemonTcpPort: number): Promise<TcpBridge> {
    return new Promise((resolve) => {
      const server: WebSocketServer = new WebSocketServer({ host: "127.0.0.1", port, path: "/v1/ws" }, (): void => resolve(bridge));
      const bridge: TcpBridge = new TcpBridge(server, port);
      server.on("connection", (ws: WebSocket) => bridge.relay(ws, daemonTcpPort));
    });
  }

  get url(): string {
    return `ws://127.0.0.1:${this.port}/v1/ws`;
  }

  private relay(ws: WebSocket, daemonTcpPort: number): void {
    const tcp = tcpConnect(daemonTcpPort, "127.0.0.1");
    this.sockets.add(tcp);
    const splitter = new FrameSplitter();
    const pending: Buffer[] = [];
    tcp.on("connect", () => pending.splice(0).forEach((b) => tcp.write(b)));
    tcp.on("data", (chunk: Buffer) => {
      for (const frame of splitter.push(chunk)) ws.send(frame);
    });
    tcp.on("close", () => {
      this.sockets.delete(tcp);
      ws.close();
    });
    tcp.on("error", () => ws.close());
    ws.on("message", (data: Buffer) => (tcp.connecting ? pending.push(data) : tcp.write(data)));
    ws.on("close", () => tcp.end());
  }

  /** Drops every relayed connection, as a network failure would. */
  dropAll(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  close(): Promise<void> {
    this.dropAll();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
