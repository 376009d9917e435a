/**
 * Where the mini-program talks to, and a few tunables. The only file a deployer edits.
 *
 * In WeChat DevTools, point `baseUrl` at your server (for local development tick
 * "不校验合法域名" in DevTools' project settings); in production it must be an https
 * domain listed in the mini-program's "request 合法域名".
 */
const config = {
  baseUrl: 'http://127.0.0.1:5000',
  apiPrefix: '/api/v1',
  // The live charging page polls GET /charging-sessions/{id} this often. The mini-program
  // has no EventSource, so the server's SSE endpoint is not used (see README).
  pollIntervalMs: 3000,
  // Starting a charge waits for the pile's acknowledgement (up to ~12 s on the server).
  requestTimeoutMs: 20000,
  // Subscribe-message template ids from the mini-program console (订阅消息). Empty: skipped.
  subscribeTemplates: {
    chargeFinished: '',
    alarm: '',
  },
  // What the wallet offers (the server decides: PAYMENT_TOPUP_AMOUNTS_FEN must list these).
  topupAmountsFen: [1000, 2000, 3000, 5000, 10000],
  // Upper limits a resident can pick for one charge (the hold); null = the server default.
  chargeLimitsFen: [null, 500, 1000, 2000],
  // What a visitor (no account) can prepay; the unused part is refunded.
  visitorAmountsFen: [200, 500, 1000],
  visitorHours: [1, 2, 4, 8],
}

module.exports = config
