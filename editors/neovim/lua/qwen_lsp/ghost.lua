-- Ghost text for Neovim 0.11, which has no vim.lsp.inline_completion: after a pause in typing,
-- ask for textDocument/inlineCompletion and show the first item as an extmark at the cursor.
local M = {}

local api = vim.api
local namespace = api.nvim_create_namespace('qwen_lsp.ghost')
api.nvim_set_hl(0, 'QwenGhostText', { link = 'Comment', default = true })

---@type table<integer, {client: vim.lsp.Client, timer: uv.uv_timer_t, request?: integer, item?: table}>
local buffers = {}

local function clear(bufnr)
  local state = buffers[bufnr]
  if not state then
    return
  end
  state.timer:stop()
  if state.request then
    state.client:cancel_request(state.request)
    state.request = nil
  end
  state.item = nil
  api.nvim_buf_clear_namespace(bufnr, namespace, 0, -1)
end

local function item_text(item)
  local text = item.insertText
  return type(text) == 'table' and text.value or text
end

-- The item as {row, col, lines}: where it goes (0-based) and the lines it inserts there.
local function placement(bufnr, item, row, col)
  local text = item_text(item)
  if not text or text == '' then
    return nil
  end
  if item.range then
    -- The item replaces its range; what the user typed inside it must match its beginning.
    local start = item.range.start
    local typed = api.nvim_buf_get_text(bufnr, start.line, start.character, row, col, {})
    local typed_text = table.concat(typed, '\n')
    if not vim.startswith(text, typed_text) then
      return nil
    end
    text = text:sub(#typed_text + 1)
  end
  return { row = row, col = col, lines = vim.split(text, '\n', { plain = true }) }
end

local function show(bufnr, place)
  api.nvim_buf_clear_namespace(bufnr, namespace, 0, -1)
  local virt_lines = {}
  for i = 2, #place.lines do
    virt_lines[#virt_lines + 1] = { { place.lines[i], 'QwenGhostText' } }
  end
  api.nvim_buf_set_extmark(bufnr, namespace, place.row, place.col, {
    virt_text = { { place.lines[1], 'QwenGhostText' } },
    virt_text_pos = 'inline',
    virt_lines = virt_lines,
    hl_mode = 'combine',
  })
end

local function request(bufnr)
  local state = buffers[bufnr]
  if not state or api.nvim_get_mode().mode:sub(1, 1) ~= 'i' or api.nvim_get_current_buf() ~= bufnr then
    return
  end
  local client = state.client
  local tick = api.nvim_buf_get_changedtick(bufnr)
  local cursor = api.nvim_win_get_cursor(0)
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = 2 } -- Automatic
  local _, id = client:request('textDocument/inlineCompletion', params, function(err, result)
    state.request = nil
    if err or not result then
      return
    end
    -- Drop an answer for a buffer or cursor that has moved on since.
    local now = api.nvim_win_get_cursor(0)
    if api.nvim_buf_get_changedtick(bufnr) ~= tick or now[1] ~= cursor[1] or now[2] ~= cursor[2] then
      return
    end
    local items = result.items or result
    local item = items[1]
    local place = item and placement(bufnr, item, cursor[1] - 1, cursor[2])
    if place then
      state.item = place
      show(bufnr, place)
    end
  end, bufnr)
  state.request = id
end

function M.attach(client, bufnr, options)
  if buffers[bufnr] then
    return
  end
  buffers[bufnr] = { client = client, timer = assert(vim.uv.new_timer()) }
  local group = api.nvim_create_augroup('qwen_lsp.ghost.' .. bufnr, { clear = true })
  api.nvim_create_autocmd({ 'TextChangedI', 'CursorMovedI' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      clear(bufnr)
      buffers[bufnr].timer:start(options.debounce_ms, 0, vim.schedule_wrap(function()
        request(bufnr)
      end))
    end,
  })
  api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      clear(bufnr)
    end,
  })
  api.nvim_create_autocmd('LspDetach', {
    group = group,
    buffer = bufnr,
    callback = function(args)
      if args.data.client_id == client.id then
        clear(bufnr)
        buffers[bufnr].timer:close()
        buffers[bufnr] = nil
        api.nvim_del_augroup_by_id(group)
      end
    end,
  })
end

--- Insert the ghost text of the current buffer; false when there is none.
function M.accept()
  local bufnr = api.nvim_get_current_buf()
  local state = buffers[bufnr]
  local place = state and state.item
  if not place then
    return false
  end
  clear(bufnr)
  -- Edit after the mapping returns: an <expr> mapping may not change the buffer.
  vim.schedule(function()
    api.nvim_buf_set_text(bufnr, place.row, place.col, place.row, place.col, place.lines)
    local last = place.lines[#place.lines]
    local col = #place.lines == 1 and place.col + #last or #last
    api.nvim_win_set_cursor(0, { place.row + #place.lines, col })
  end)
  return true
end

return M
