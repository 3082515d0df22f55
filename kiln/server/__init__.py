"""The HTTP server (`kiln serve`): an OpenAI-compatible API with llama-server's endpoints,
flags and log lines, over the engine's continuous batching.

Modules: `app` (the FastAPI app, API key and CORS gate, error bodies), `routes_generate`
(chat completions, completions, llama's /completion, streaming), `routes_info` (health,
models, props, metrics, slots, tokenize, the page), `schemas` (request validation),
`prepare` (requests to token ids and settings), `chat_prompt` (messages through the chat
template), `chat_output` and `tool_formats` (reasoning and tool calls parsed back),
`scheduler` and `slots` (the batching loop and each slot's generation), `sampler`,
`stops`, `slot_files` (slot save/restore), `metrics`, `responses`, `logs`, `context`,
`settings`, `tasks`, and `static/index.html` (the chat page).
"""
