-- :QwenExplain and the right-click menu: run the server's `qwen.explain` command and show the
-- explanation in a floating window as its $/progress reports arrive. Closing the window cancels
-- the request.
local M = {}

local api = vim.api
local counter = 0

---@class qwen_lsp.Explanation
---@field client vim.lsp.Client
---@field request_id? integer
---@field buf integer
---@field win integer
---@field done boolean

---@type table<string, qwen_lsp.Explanation>
local running = {}

local function layout(lines)
  local options = require('qwen_lsp').options.explain
  local width = math.floor(vim.o.columns * options.max_width)
  local longest = 30
  for _, line in ipairs(lines) do
    longest = math.max(longest, vim.fn.strdisplaywidth(line))
  end
  width = math.max(20, math.min(width, longest + 1))
  local height = 0
  for _, line in ipairs(lines) do
    height = height + math.max(1, math.ceil(vim.fn.strdisplaywidth(line) / width))
  end
  height = math.max(1, math.min(height, math.floor((vim.o.lines - 2) * options.max_height)))
  return { relative = 'editor', anchor = 'NE', row = 1, col = vim.o.columns - 1, width = width, height = height }
end

---@param explanation qwen_lsp.Explanation
local function render(explanation, text, footer)
  if not api.nvim_buf_is_valid(explanation.buf) then
    return
  end
  local lines = vim.split(text, '\n', { plain = true })
  vim.bo[explanation.buf].modifiable = true
  api.nvim_buf_set_lines(explanation.buf, 0, -1, false, lines)
  vim.bo[explanation.buf].modifiable = false
  if api.nvim_win_is_valid(explanation.win) then
    local config = layout(lines)
    config.footer = footer
    config.footer_pos = 'right'
    api.nvim_win_set_config(explanation.win, config)
  end
end

api.nvim_create_autocmd('LspProgress', {
  group = api.nvim_create_augroup('qwen_lsp.explain', { clear = true }),
  pattern = 'report',
  callback = function(args)
    local params = args.data.params
    local explanation = running[params.token]
    local value = params.value
    if not explanation or explanation.done or type(value.message) ~= 'string' then
      return
    end
    if value.percentage then -- still reading the code: a progress line, not the answer
      render(explanation, '', ' ' .. value.message .. ' ')
    else
      render(explanation, value.message, ' streaming… (q stops) ')
    end
  end,
})

local function open_window()
  local buf = api.nvim_create_buf(false, true)
  vim.bo[buf].filetype = 'markdown'
  vim.bo[buf].bufhidden = 'wipe'
  vim.b[buf].qwen_explain = true
  local config = layout({ '' })
  config.border = 'rounded'
  config.title = ' Qwen: explain '
  config.footer = ' reading the code… '
  config.footer_pos = 'right'
  config.style = 'minimal'
  local win = api.nvim_open_win(buf, false, config)
  vim.wo[win].wrap = true
  vim.wo[win].linebreak = true
  vim.wo[win].conceallevel = 2
  vim.keymap.set('n', 'q', '<Cmd>close<CR>', { buffer = buf, nowait = true })
  vim.keymap.set('n', '<Esc>', '<Cmd>close<CR>', { buffer = buf, nowait = true })
  return buf, win
end

local function attached_client(bufnr)
  local client = require('qwen_lsp').client(bufnr)
  if not client then
    vim.notify('qwen-lsp is not attached to this buffer', vim.log.levels.WARN)
  end
  return client
end

--- Explain lines `line1`..`line2` (1-based, inclusive) of `bufnr`.
function M.explain(bufnr, line1, line2)
  bufnr = bufnr == 0 and api.nvim_get_current_buf() or bufnr
  local client = attached_client(bufnr)
  if not client then
    return
  end
  local last = api.nvim_buf_get_lines(bufnr, line2 - 1, line2, true)[1]
  local range = {
    start = { line = line1 - 1, character = 0 },
    ['end'] = { line = line2 - 1, character = vim.str_utfindex(last, client.offset_encoding) },
  }
  return M.explain_range(bufnr, range)
end

--- Explain an LSP `range` of `bufnr` (in the client's position encoding); an empty range
--- explains the function around it.
function M.explain_range(bufnr, range)
  bufnr = bufnr == 0 and api.nvim_get_current_buf() or bufnr
  local client = attached_client(bufnr)
  if not client then
    return
  end
  counter = counter + 1
  local token = ('qwen-nvim-explain-%d-%d'):format(vim.fn.getpid(), counter)
  local buf, win = open_window()
  ---@type qwen_lsp.Explanation
  local explanation = { client = client, buf = buf, win = win, done = false }
  running[token] = explanation

  local params = {
    command = 'qwen.explain',
    arguments = { { textDocument = { uri = vim.uri_from_bufnr(bufnr) }, range = range } },
    workDoneToken = token,
  }
  local _, request_id = client:request('workspace/executeCommand', params, function(err, result)
    explanation.done = true
    running[token] = nil
    if err then
      if err.code ~= vim.lsp.protocol.ErrorCodes.RequestCancelled then
        render(explanation, 'qwen-lsp: ' .. err.message, ' failed ')
      end
      return
    end
    render(explanation, result.text, ' done (q closes) ')
  end, bufnr)
  explanation.request_id = request_id

  api.nvim_create_autocmd('WinClosed', {
    pattern = tostring(win),
    once = true,
    callback = function()
      if not explanation.done then
        explanation.done = true
        running[token] = nil
        client:cancel_request(request_id)
      end
    end,
  })
  return explanation
end

return M
