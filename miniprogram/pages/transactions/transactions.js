/**
 * One account's money history, newest first: top-ups, charges, holds and releases,
 * refunds; more on scrolling to the bottom.
 * API: GET /charging-accounts/{id}, GET /charging-accounts/{id}/transactions?before_id.
 */
const api = require('../../utils/api')
const errors = require('../../utils/errors')
const wallet = require('../../utils/wallet')

const PAGE = 20

Component({
  data: { accountId: null, account: null, rows: [], more: true, loading: false, error: '' },

  methods: {
    async onLoad(query) {
      const accountId = Number(query && query.account_id)
      this.setData({ accountId })
      try {
        this.setData({ account: wallet.accountRow(await api.account(accountId)) })
      } catch (err) {
        this.setData({ error: errors.userMessage(err) })
      }
      await this.loadMore()
    },

    onReachBottom() {
      return this.loadMore()
    },

    async loadMore() {
      if (this.data.loading || !this.data.more) return
      this.setData({ loading: true })
      try {
        const last = this.lastId
        const page = await api.transactions(this.data.accountId, last, PAGE)
        if (page.length) this.lastId = page[page.length - 1].id
        this.setData({ rows: this.data.rows.concat(page.map(wallet.txRow)),
          more: page.length === PAGE })
      } catch (err) {
        this.setData({ error: errors.userMessage(err) })
      } finally {
        this.setData({ loading: false })
      }
    },
  },
})
