-- Drives a real headless Neovim through the plugin, as a user would: types in insert mode, waits
-- for ghost text, accepts it with the mapped key, runs :QwenExplain and closes its float, then
-- right-clicks and chooses "Explain with Qwen" from the PopUp menu.
-- Run with `nvim --headless -u NONE -i NONE -c 'luafile nvim_e2e.lua'` (typed keys need the main
-- loop, which `-l` does not run). Inputs come from QWEN_E2E_* variables; it writes what it saw
-- as JSON to QWEN_E2E_RESULT and quits. The pytest side makes the assertions.
local env = vim.env
local api = vim.api
local uv = vim.uv
local result = { events = {} }

local function now_ms()
  return uv.hrtime() / 1e6
end

local function note(event)
  result.events[#result.events + 1] = ('%.0f ms: %s'):format(now_ms() - result.started_ms, event)
end

local function finish(err)
  result.error = err
  local file = assert(io.open(env.QWEN_E2E_RESULT, 'w'))
  file:write(vim.json.encode(result))
  file:close()
  vim.cmd('qall!')
end

-- Poll `condition` every `interval` ms (from inside the coroutine) until it returns a value.
local function wait_for(what, condition, timeout_ms, interval)
  local co = assert(coroutine.running())
  local deadline = now_ms() + timeout_ms
  local function poll()
    local ok, value = pcall(condition)
    if not ok then
      coroutine.resume(co, nil, value)
    elseif value then
      coroutine.resume(co, value)
    elseif now_ms() > deadline then
      coroutine.resume(co, nil)
    else
      vim.defer_fn(poll, interval or 10)
    end
  end
  vim.schedule(poll)
  local value, err = coroutine.yield()
  if err then
    error(err, 0)
  end
  if not value then
    error(('timed out after %d ms waiting for %s'):format(timeout_ms, what), 0)
  end
  return value
end

local function type_keys(keys)
  -- 'm': through mappings, like a user's keys; queued, so the main loop handles them in turn.
  api.nvim_feedkeys(vim.keycode(keys), 'm', false)
end

local function status(client)
  local response = client:request_sync('qwen/status', {}, 5000)
  return response and response.result or {}
end

-- The ghost text on screen: the extmark's inline text and its virtual lines.
local function ghost_text(namespace)
  local ns = api.nvim_get_namespaces()[namespace]
  if not ns then
    return nil
  end
  for _, mark in ipairs(api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })) do
    local details = mark[4]
    if details.virt_text then
      local lines = { '' }
      for _, chunk in ipairs(details.virt_text) do
        lines[1] = lines[1] .. chunk[1]
      end
      for _, line in ipairs(details.virt_lines or {}) do
        local text = ''
        for _, chunk in ipairs(line) do
          text = text .. chunk[1]
        end
        lines[#lines + 1] = text
      end
      local text = table.concat(lines, '\n')
      if text ~= '' then
        return { text = text, row = mark[2], col = mark[3], hl = details.virt_text[1][2] }
      end
    end
  end
end

local function explain_window()
  for _, win in ipairs(api.nvim_list_wins()) do
    local buf = api.nvim_win_get_buf(win)
    if vim.b[buf].qwen_explain then
      return win
    end
  end
end

local function footer(win)
  local parts = {}
  for _, chunk in ipairs(api.nvim_win_get_config(win).footer or {}) do
    parts[#parts + 1] = type(chunk) == 'table' and chunk[1] or chunk
  end
  return table.concat(parts)
end

local function test_ghost_text(namespace)
  -- Type a statement at the end of the marked line, in insert mode.
  local row = tonumber(env.QWEN_E2E_LINE)
  api.nvim_win_set_cursor(0, { row, 0 })
  local typed_at
  api.nvim_create_autocmd('TextChangedI', {
    callback = function()
      typed_at = now_ms()
    end,
  })
  type_keys('A' .. env.QWEN_E2E_TYPE)
  local last_line = vim.split(env.QWEN_E2E_TYPE, '<CR>', { plain = true })
  wait_for('the typed text', function()
    return vim.endswith(api.nvim_get_current_line(), last_line[#last_line]) and api.nvim_get_mode().mode == 'i'
  end, 10000)
  local last_keystroke = typed_at
  note('typed ' .. vim.inspect(env.QWEN_E2E_TYPE))
  local ghost = wait_for('ghost text', function()
    return ghost_text(namespace)
  end, tonumber(env.QWEN_E2E_GHOST_TIMEOUT_MS), 5)
  result.ghost_ms = now_ms() - last_keystroke
  result.ghost = ghost.text
  result.ghost_hl = ghost.hl
  note('ghost text ' .. vim.inspect(ghost.text))

  local before = api.nvim_buf_get_lines(0, 0, -1, true)
  local cursor = api.nvim_win_get_cursor(0)
  local line = before[cursor[1]]
  local expected = vim.list_slice(before, 1, cursor[1] - 1)
  local inserted = vim.split(line:sub(1, cursor[2]) .. ghost.text .. line:sub(cursor[2] + 1), '\n', { plain = true })
  vim.list_extend(expected, inserted)
  vim.list_extend(expected, vim.list_slice(before, cursor[1] + 1))
  local tick = api.nvim_buf_get_changedtick(0)
  type_keys('<Tab>')
  wait_for('the accepted text', function()
    return api.nvim_buf_get_changedtick(0) ~= tick
  end, 10000)
  result.accepted = table.concat(api.nvim_buf_get_lines(0, 0, -1, true), '\n')
  result.expected = table.concat(expected, '\n')
  result.ghost_after_accept = ghost_text(namespace) and ghost_text(namespace).text or ''
  note('accepted')

  -- Without ghost text the key does what it did before: a plain <Tab> here.
  type_keys('<Esc>o<Tab>')
  wait_for('a plain tab', function()
    return api.nvim_get_mode().mode == 'i' and api.nvim_get_current_line():find('\t') ~= nil
  end, 10000)
  result.plain_tab_line = api.nvim_get_current_line()
  type_keys('<Esc>u')
  wait_for('normal mode', function()
    return api.nvim_get_mode().mode == 'n'
  end, 5000)
end

-- Watch the explain float until the explanation is done: every distinct state of its text.
local function watch_explanation(win)
  local buf = api.nvim_win_get_buf(win)
  local watched = { snapshots = {} }
  local snapshots = watched.snapshots
  local started = now_ms()
  wait_for('the end of the explanation', function()
    local text = table.concat(api.nvim_buf_get_lines(buf, 0, -1, true), '\n')
    if text ~= '' and text ~= snapshots[#snapshots] then
      snapshots[#snapshots + 1] = text
      if #snapshots == 1 then
        watched.first_text_ms = now_ms() - started
      end
    end
    local state = footer(win)
    if state:find('failed') then
      error('the explanation failed: ' .. table.concat(api.nvim_buf_get_lines(buf, 0, -1, true), '\n'), 0)
    end
    return state:find('done') ~= nil
  end, 600000, 10)
  watched.ms = now_ms() - started
  watched.text = table.concat(api.nvim_buf_get_lines(buf, 0, -1, true), '\n')
  watched.float = api.nvim_win_get_config(win).relative ~= ''
  return watched
end

local function test_explain(client)
  local first, last = env.QWEN_E2E_EXPLAIN:match('(%d+),(%d+)')
  vim.cmd(('%s,%sQwenExplain'):format(first, last))
  local win = wait_for('the explain window', explain_window, 5000)
  local watched = watch_explanation(win)
  result.explain_first_text_ms = watched.first_text_ms
  result.explain_ms = watched.ms
  result.explain_snapshots = watched.snapshots
  result.explain_text = watched.text
  result.explain_float = watched.float
  note(('explained in %d snapshots'):format(#watched.snapshots))
  api.nvim_win_close(win, true)

  -- Closing the window while it streams cancels the request in the server.
  local before = #(status(client).recent or {})
  vim.cmd(('%s,%sQwenExplain'):format(first, last))
  win = wait_for('the second explain window', explain_window, 5000)
  local buf = api.nvim_win_get_buf(win)
  wait_for('streamed text', function()
    return api.nvim_buf_get_lines(buf, 0, 1, true)[1] ~= ''
  end, 120000)
  api.nvim_win_close(win, true)
  note('closed the explain window')
  local cancelled = wait_for('the server to stop generating', function()
    local recent = status(client).recent or {}
    for i = before + 1, #recent do
      if recent[i].stop_reason == 'cancelled' then
        return recent[i]
      end
    end
  end, 60000, 200)
  result.cancelled_stats = cancelled
end

-- Right-click at line `lnum` (1-based), byte column `col`, and choose `choose` from the PopUp
-- menu (nil: close it). Headless Neovim draws the popup menu but reads no input while it is
-- open (keys sent with nvim_input wait until it closes), so the keys that choose the entry are
-- typed ahead when it opens (MenuPopup, after the plugin's handler enabled its entries).
-- Returns the entries and whether each was enabled.
local function right_click(lnum, col, choose)
  local seen = {}
  api.nvim_create_autocmd('MenuPopup', {
    once = true,
    callback = function()
      local mode = vim.fn.mode() == 'n' and 'n' or 'v'
      local downs, found = 0, false
      for _, item in ipairs(vim.fn.menu_get('PopUp', mode)[1].submenus) do
        local mapping = (item.mappings or {})[mode]
        local enabled = mapping ~= nil and mapping.enabled == 1
        seen[item.name] = enabled
        if not found and enabled and not item.name:match('^%-.*%-$') then
          downs = downs + 1
        end
        found = found or (item.name == choose and enabled)
      end
      api.nvim_feedkeys(vim.keycode(found and ('<Down>'):rep(downs) .. '<CR>' or '<Esc>'), 't', false)
    end,
  })
  local pos = vim.fn.screenpos(api.nvim_get_current_win(), lnum, col + 1)
  api.nvim_input_mouse('right', 'press', '', 0, pos.row - 1, pos.col - 1)
  api.nvim_input_mouse('right', 'release', '', 0, pos.row - 1, pos.col - 1)
  wait_for('the popup menu to open and close', function()
    return next(seen) ~= nil and vim.fn.pumvisible() == 0
  end, 10000)
  return seen
end

local function line_of(text)
  for lnum, line in ipairs(api.nvim_buf_get_lines(0, 0, -1, true)) do
    if line:find(text, 1, true) then
      return lnum
    end
  end
  error('no line with ' .. text, 0)
end

-- The `qwen.explain` ranges the client sends.
local function record_explain_ranges(client)
  local ranges = {}
  local request = client.request
  client.request = function(self, method, params, ...)
    if method == 'workspace/executeCommand' and params.command == 'qwen.explain' then
      ranges[#ranges + 1] = vim.deepcopy(params.arguments[1].range)
    end
    return request(self, method, params, ...)
  end
  return ranges
end

local function test_menu(client)
  local ranges = record_explain_ranges(client)
  local menu = {}
  result.menu = menu
  -- The function under the mouse: a right-click in the body of describe().
  local body = line_of('return f"a {shape}')
  menu.clicked = { line = body - 1, character = 8 }
  menu.normal_entries = right_click(body, 8, 'Explain with Qwen')
  local win = wait_for('the explain window from the menu', explain_window, 10000)
  menu.cursor = api.nvim_win_get_cursor(0)
  local watched = watch_explanation(win)
  menu.explain = watched
  note(('menu: explained in %d snapshots'):format(#watched.snapshots))
  api.nvim_win_close(win, true)
  menu.normal_range = ranges[1]

  -- A visual selection (the two lines of circle_area), right-clicked inside.
  local def = line_of('def circle_area')
  api.nvim_win_set_cursor(0, { def, 0 })
  type_keys('Vj')
  wait_for('visual mode', function()
    return api.nvim_get_mode().mode == 'V'
  end, 5000)
  menu.visual_entries = right_click(def + 1, 4, 'Explain with Qwen')
  win = wait_for('the explain window for the selection', explain_window, 10000)
  api.nvim_win_close(win, true) -- its range is what this checks; closing cancels it
  menu.visual_range = ranges[2]
  menu.mode_after_visual = api.nvim_get_mode().mode
  note('menu: explained a selection')

  -- Fix is offered where a diagnostic is.
  local ns = api.nvim_create_namespace('qwen_e2e')
  vim.diagnostic.set(ns, 0, { { lnum = body - 1, col = 4, message = 'a test problem' } })
  menu.diagnostic_entries = right_click(body, 6, nil)
  vim.diagnostic.reset(ns, 0)

  -- Not in a buffer the server is not attached to.
  vim.cmd('new')
  api.nvim_buf_set_lines(0, 0, -1, true, { 'plain text, no server here' })
  menu.other_buffer_entries = right_click(1, 2, nil)
  vim.cmd('close!')
  note('menu: entries checked')
end

-- Stopping the server takes the entries out of the menu.
local function test_menu_removed(client)
  client:stop()
  result.menu.removed = wait_for('the entries to leave the menu', function()
    for _, item in ipairs(vim.fn.menu_get('PopUp', 'n')[1].submenus) do
      if item.name == 'Explain with Qwen' or item.name == 'Fix with Qwen' then
        return false
      end
    end
    return true
  end, 20000, 50)
end

local function main()
  result.started_ms = now_ms()
  result.version = tostring(vim.version())
  vim.opt.runtimepath:prepend(env.QWEN_E2E_PLUGIN)
  vim.cmd('filetype on')
  local qwen = require('qwen_lsp')
  qwen.setup({
    cmd = { env.QWEN_E2E_PYTHON, '-I', '-m', 'qwen_lsp', '--log-level', 'INFO', '--log-file', env.QWEN_E2E_SERVER_LOG, 'serve' },
    -- A short explanation keeps the test short on a busy machine; it still streams.
    settings = { model = env.QWEN_E2E_MODEL, explainMaxTokens = 150 },
    ghost_text = { engine = env.QWEN_E2E_ENGINE },
  })
  vim.cmd.edit(vim.fn.fnameescape(env.QWEN_E2E_FILE))
  local client = wait_for('the client to attach', function()
    return qwen.client(0)
  end, 30000)
  result.offset_encoding = client.offset_encoding
  wait_for('the model', function()
    return status(client).state == 'ready'
  end, 180000, 200)
  note('model ready')
  local namespace = qwen.native_ghost_text() and 'nvim.lsp.inline_completion' or 'qwen_lsp.ghost'
  result.namespace = namespace
  test_ghost_text(namespace)
  if env.QWEN_E2E_EXPLAIN then -- unset or empty: ghost text only
    test_explain(client)
  end
  if env.QWEN_E2E_MENU == '1' then
    test_menu(client)
  end
  vim.cmd('checkhealth qwen_lsp') -- opens the report in a new buffer
  result.health = table.concat(api.nvim_buf_get_lines(0, 0, -1, true), '\n')
  if env.QWEN_E2E_MENU == '1' then
    test_menu_removed(client)
  end
end

vim.schedule(function()
  coroutine.wrap(function()
    local ok, err = xpcall(main, debug.traceback)
    finish(not ok and tostring(err) or nil)
  end)()
end)
