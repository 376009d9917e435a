/** What a list shows when it has nothing. */
Component({
  properties: { text: { type: String, value: '暂无数据' } },
})
