/**
 * The resident's charging sessions over all bound accounts, newest first; tap one for
 * its live page (still running) or its receipt. API: GET /charging-sessions?before_id.
 */
const api = require('../../utils/api')
const errors = require('../../utils/errors')
const session = require('../../utils/session')

const PAGE = 20

Component({
  data: { rows: [], more: true, loading: false, error: '' },

  methods: {
    onLoad() {
      return this.loadMore()
    },

    onReachBottom() {
      return this.loadMore()
    },

    async loadMore() {
      if (this.data.loading || !this.data.more) return
      this.setData({ loading: true })
      try {
        const page = await api.sessions({ limit: PAGE, before_id: this.lastId })
        if (page.length) this.lastId = page[page.length - 1].id
        this.setData({ rows: this.data.rows.concat(page.map(session.historyRow)),
          more: page.length === PAGE })
      } catch (err) {
        this.setData({ error: errors.userMessage(err) })
      } finally {
        this.setData({ loading: false })
      }
    },

    onOpen(e) {
      const row = this.data.rows[Number(e.currentTarget.dataset.index)]
      if (!row) return
      const page = row.running ? 'charging' : 'receipt'
      wx.navigateTo({ url: `/pages/${page}/${page}?session_id=${row.sessionId}` })
    },
  },
})
