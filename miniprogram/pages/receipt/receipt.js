/**
 * The receipt: energy, cost, duration, why it ended, the balance left; for a visitor the
 * prepayment and the refund of the unused part. If the pile has not reported the end yet
 * it keeps polling until the session is settled. API: GET /charging-sessions/{id}.
 */
const api = require('../../utils/api')
const config = require('../../utils/config')
const errors = require('../../utils/errors')
const session = require('../../utils/session')
const { createPoller } = require('../../utils/poller')

Component({
  data: {
    sessionId: '',
    view: null,
    error: '',
  },

  methods: {
    onLoad(query) {
      const sessionId = (query && query.session_id) || ''
      this.setData({ sessionId })
      if (!sessionId) {
        this.setData({ error: '没有找到这次充电' })
        return
      }
      this.poller = createPoller({
        fetch: () => api.session(sessionId),
        onData: (s) => this.setData({ view: session.receiptView(s), error: '' }),
        onError: (err) => this.setData({ error: errors.userMessage(err) }),
        isDone: (s) => session.isOver(s.status),
        interval: config.pollIntervalMs,
      })
      this.poller.start()
    },

    onUnload() {
      if (this.poller) this.poller.stop()
    },

    onDone() {
      wx.switchTab({ url: '/pages/index/index' })
    },

    onHistory() {
      wx.navigateTo({ url: '/pages/history/history' })
    },
  },
})
