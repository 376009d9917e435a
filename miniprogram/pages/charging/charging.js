/**
 * The live charge: power, energy, cost, elapsed and remaining time, and a stop button.
 * Updates itself by polling GET /charging-sessions/{id} every config.pollIntervalMs (the
 * mini-program has no EventSource for the server's SSE endpoint); when the session is
 * over it opens the receipt. API: GET /charging-sessions/{id}, POST …/{id}/stop.
 */
const api = require('../../utils/api')
const config = require('../../utils/config')
const errors = require('../../utils/errors')
const session = require('../../utils/session')
const { createPoller } = require('../../utils/poller')
const wxp = require('../../utils/wxp')

Component({
  data: {
    sessionId: '',
    view: null,
    error: '',
    stopping: false,
  },

  methods: {
    onLoad(query) {
      const sessionId = (query && query.session_id) || ''
      this.setData({ sessionId })
      if (!sessionId) {
        this.setData({ error: '没有找到这次充电' })
        return
      }
      this.finished = false
      this.poller = createPoller({
        fetch: () => api.session(sessionId),
        onData: (s) => this.show(s),
        onError: (err) => this.setData({ error: errors.userMessage(err) }),
        isDone: (s) => session.isOver(s.status),
        interval: config.pollIntervalMs,
      })
      this.poller.start()
    },

    onShow() {
      if (this.poller && !this.poller.running && !this.finished) this.poller.start()
    },

    onHide() {
      if (this.poller) this.poller.stop()
    },

    onUnload() {
      if (this.poller) this.poller.stop()
    },

    show(s) {
      this.latest = s
      this.setData({ view: session.liveView(s), error: '' })
      if (session.isOver(s.status) && !this.finished) {
        this.finished = true
        if (this.poller) this.poller.stop()
        wx.redirectTo({ url: `/pages/receipt/receipt?session_id=${s.session_id}` })
      }
    },

    async onStop() {
      if (this.data.stopping) return null
      const ok = await wxp.confirm('停止充电', '确定要停止本次充电吗？', '停止')
      if (!ok) return null
      this.setData({ stopping: true })
      try {
        const s = await api.stopCharge(this.data.sessionId)
        this.show(s)
        if (this.poller) this.poller.now()
        return s
      } catch (err) {
        wxp.toast(errors.userMessage(err))
        return null
      } finally {
        this.setData({ stopping: false })
      }
    },
  },
})
