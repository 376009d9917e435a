/**
 * A community's piles with each port's live status (refreshed every 10 s while shown).
 * API: GET /piles?community_id.
 */
const api = require('../../../utils/api')
const errors = require('../../../utils/errors')
const ops = require('../../../utils/ops')
const { createPoller } = require('../../../utils/poller')

Component({
  data: { communityId: null, piles: [], loading: true, error: '' },

  methods: {
    onLoad(query) {
      this.setData({ communityId: Number(query && query.community_id) })
      this.poller = createPoller({
        fetch: () => api.piles(this.data.communityId),
        onData: (list) => this.setData({ piles: list.map(ops.pileRow), loading: false, error: '' }),
        onError: (err) => this.setData({ loading: false, error: errors.userMessage(err) }),
        interval: 10000,
      })
    },

    onShow() {
      if (this.poller) this.poller.start()
    },

    onHide() {
      if (this.poller) this.poller.stop()
    },

    onUnload() {
      if (this.poller) this.poller.stop()
    },

    onPullDownRefresh() {
      if (this.poller) this.poller.now()
      wx.stopPullDownRefresh()
    },

    onOpen(e) {
      wx.navigateTo({ url: `/pages/ops/pile/pile?pile_id=${e.currentTarget.dataset.id}` })
    },
  },
})
