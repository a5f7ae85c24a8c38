-- The right-click menu: "Explain with Qwen" and "Fix with Qwen" in Neovim's `PopUp` menu. The
-- entries exist while qwen-lsp is attached to some buffer, and a `MenuPopup` autocmd enables them
-- only where it is attached (Fix only with a diagnostic on the line under the mouse). Explain acts
-- on the visual selection, else on the function under the mouse (the server explains the
-- function around an empty range).
local M = {}

local api = vim.api
local ENTRIES = { explain = 'PopUp.Explain\\ with\\ Qwen', fix = 'PopUp.Fix\\ with\\ Qwen' }
local group = api.nvim_create_augroup('qwen_lsp.menu', { clear = true })
local defined = false

-- Where the menu was opened: the mouse position when it was a right-click in this window (saved
-- by the MenuPopup autocmd), else the cursor (e.g. `:emenu`). Row 1-based, column a byte index.
---@type { win: integer, row: integer, col: integer }?
local opened_at

local function position()
  local win = api.nvim_get_current_win()
  local at = opened_at
  opened_at = nil
  if at and at.win == win then
    return at.row, at.col
  end
  local cursor = api.nvim_win_get_cursor(win)
  return cursor[1], cursor[2]
end

local function diagnostics_on(bufnr, row)
  return vim.diagnostic.get(bufnr, { lnum = row - 1 })
end

local function position_of(client, bufnr, row, col)
  local line = api.nvim_buf_get_lines(bufnr, row - 1, row, true)[1]
  return { line = row - 1, character = vim.str_utfindex(line, client.offset_encoding, math.min(col, #line)) }
end

-- The visual selection as an LSP range, ending visual mode.
local function selection_range(client, bufnr, mode)
  local region = vim.fn.getregionpos(vim.fn.getpos('v'), vim.fn.getpos('.'), { type = mode, eol = true })
  local first, last = region[1][1], region[#region][2]
  api.nvim_feedkeys(vim.keycode('<Esc>'), 'n', false) -- after this mapping, like a typed key
  local start_col, end_col = first[3] - 1, last[3]
  if mode ~= 'v' then -- linewise or blockwise: whole lines
    start_col, end_col = 0, #api.nvim_buf_get_lines(bufnr, last[2] - 1, last[2], true)[1]
  end
  return {
    start = position_of(client, bufnr, first[2], start_col),
    ['end'] = position_of(client, bufnr, last[2], end_col),
  }
end

--- Explain the visual selection, or the function under the mouse (or the cursor).
function M.explain()
  local bufnr = api.nvim_get_current_buf()
  local client = require('qwen_lsp').client(bufnr)
  if not client then
    return
  end
  local mode = api.nvim_get_mode().mode
  local range
  if mode == 'v' or mode == 'V' or mode == '\22' then
    range = selection_range(client, bufnr, mode)
  else
    local here = position_of(client, bufnr, position())
    range = { start = here, ['end'] = here }
  end
  return require('qwen_lsp.explain').explain_range(bufnr, range)
end

local function is_fix(action)
  return vim.startswith(action.title, 'Fix with Qwen')
end

--- Fix a diagnostic on the line under the mouse (or the cursor), any server's: the client sends
--- only its own server's diagnostics by default.
function M.fix()
  local row, col = position()
  api.nvim_win_set_cursor(0, { row, col })
  local diagnostics = diagnostics_on(0, row)
  if #diagnostics == 0 then
    vim.notify('qwen-lsp: no diagnostic on this line to fix', vim.log.levels.WARN)
    return
  end
  vim.lsp.buf.code_action({
    context = { diagnostics = vim.lsp.diagnostic.from(diagnostics), only = { 'quickfix' } },
    filter = is_fix,
    apply = true,
  })
end

local function enable(entry, on)
  vim.cmd(('silent! anoremenu %s %s'):format(on and 'enable' or 'disable', entry))
end

local function on_menu_popup()
  local bufnr = api.nvim_get_current_buf()
  local attached = require('qwen_lsp').client(bufnr) ~= nil
  local mouse = vim.fn.getmousepos()
  local win = api.nvim_get_current_win()
  local row, col = unpack(api.nvim_win_get_cursor(win))
  if mouse.winid == win and mouse.line > 0 then
    row, col = mouse.line, math.max(mouse.column - 1, 0)
  end
  opened_at = { win = win, row = row, col = col }
  enable(ENTRIES.explain, attached)
  enable(ENTRIES.fix, attached and #diagnostics_on(bufnr, row) > 0)
end

--- Add the entries (once, for every buffer; the MenuPopup autocmd enables them per buffer).
function M.attach()
  if defined then
    return
  end
  defined = true
  -- Normal and visual mode; <Cmd> keeps the selection for Explain to read.
  for _, action in ipairs({ 'explain', 'fix' }) do
    for _, mode in ipairs({ 'n', 'x' }) do
      vim.cmd(("%snoremenu %s <Cmd>lua require('qwen_lsp.menu').%s()<CR>"):format(mode, ENTRIES[action], action))
    end
  end
  api.nvim_create_autocmd('MenuPopup', {
    group = group,
    callback = on_menu_popup,
    desc = 'qwen-lsp: right-click entries',
  })
end

--- Remove the entries once no buffer has the server attached.
function M.detach()
  vim.schedule(function() -- after the client has let go of the buffer
    for _, client in ipairs(vim.lsp.get_clients({ name = 'qwen_lsp' })) do
      if next(client.attached_buffers) then
        return
      end
    end
    if defined then
      defined = false
      vim.cmd('silent! aunmenu ' .. ENTRIES.explain)
      vim.cmd('silent! aunmenu ' .. ENTRIES.fix)
      api.nvim_clear_autocmds({ group = group })
    end
  end)
end

return M
