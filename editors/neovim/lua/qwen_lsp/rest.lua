-- Tell the server where the cursor comes to rest (`qwen/cursorRested`, debounced), so it reads
-- the completion prompt for that place while the model is idle and typing there starts warm.
-- Typing needs no hint: the server learns the place from the edits themselves.
local M = {}

local api = vim.api
local NOTIFICATION = 'qwen/cursorRested'

---@type table<integer, {timer: uv.uv_timer_t, sent?: string}>
local buffers = {}

local function send(client, bufnr)
  local state = buffers[bufnr]
  if not state or api.nvim_get_current_buf() ~= bufnr or client:is_stopped() then
    return
  end
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  local key = params.position.line .. ':' .. params.position.character
  if key ~= state.sent then -- only a new place is worth the engine's time
    state.sent = key
    client:notify(NOTIFICATION, params)
  end
end

--- Watch `bufnr`'s cursor for `client`; `delay_ms` is how long it must stay put.
function M.attach(client, bufnr, delay_ms)
  if buffers[bufnr] then
    return
  end
  local state = { timer = vim.uv.new_timer() }
  buffers[bufnr] = state
  local group = api.nvim_create_augroup('qwen_lsp.rest.' .. bufnr, { clear = true })
  api.nvim_create_autocmd({ 'CursorMoved', 'BufEnter' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      state.timer:stop()
      state.timer:start(delay_ms, 0, vim.schedule_wrap(function()
        send(client, bufnr)
      end))
    end,
  })
  api.nvim_create_autocmd({ 'BufUnload', 'LspDetach' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      M.detach(bufnr)
    end,
  })
  -- The cursor already rests somewhere in a buffer just attached.
  state.timer:start(delay_ms, 0, vim.schedule_wrap(function()
    send(client, bufnr)
  end))
end

function M.detach(bufnr)
  local state = buffers[bufnr]
  if state then
    buffers[bufnr] = nil
    state.timer:stop()
    state.timer:close()
    pcall(api.nvim_del_augroup_by_name, 'qwen_lsp.rest.' .. bufnr)
  end
end

return M
