// Drives one official JS client (realtime-js or supabase-js) for the test suite.
//
// Commands come on stdin and events go to stdout, one JSON object per line.
// Every callback the client library fires is reported with exactly what the
// library handed it, so tests assert what an application would see.
//
//   node driver.mjs --client realtime-js|supabase-js --url http://127.0.0.1:PORT
//                   --apikey KEY [--vsn 1.0.0|2.0.0] [--token JWT]
//
// Commands (an optional "id" is echoed in the "done"/"error" event that ends it):
//   {"cmd":"subscribe","topic","config"?,"postgres_changes"?:[binding...]}
//   {"cmd":"on_broadcast","topic","event","resume"?} (before subscribe; resume:
//                                                    keep replay.since at meta.id)
//   {"cmd":"on_presence","topic","event":"sync|join|leave"} (before subscribe)
//   {"cmd":"send","topic","event","payload"}         a broadcast (over REST while
//                                                    the channel is not joined)
//   {"cmd":"http_send","topic","event","payload"}    channel.httpSend (REST)
//   {"cmd":"track","topic","payload"} / {"cmd":"untrack","topic"}
//   {"cmd":"set_auth","token"} / {"cmd":"unsubscribe","topic"} / {"cmd":"close"}
// Events:
//   ready, status {topic,status,error}, postgres_changes {topic,binding,payload},
//   broadcast {topic,event,payload}, presence {topic,kind,payload,state},
//   system {topic,payload}, done {cmd,id,result}, error {cmd,id,message},
//   exception {message,stack}, log {kind,msg,data}, sent {hex} (a binary frame
//   the client wrote, e.g. a vsn 2.0.0 broadcast: kind 3)

import { createInterface } from 'node:readline'
import { RealtimeClient } from '@supabase/realtime-js'
import { createClient } from '@supabase/supabase-js'
import WebSocket from 'ws'

function parseArgs(argv) {
  const args = {}
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--')) throw new Error(`unexpected argument ${argv[i]}`)
    args[argv[i].slice(2)] = argv[i + 1]
  }
  return args
}

function emit(event) {
  // Pipes are written synchronously by Node on Linux: nothing is lost on exit.
  process.stdout.write(JSON.stringify(event) + '\n')
}

function errorText(err) {
  if (err === undefined || err === null) return null
  return err instanceof Error ? err.message : String(err)
}

// A library that throws inside a socket callback would kill the process (with
// `ws`, docs/protocol.md §11); report it instead so the test sees what broke.
process.on('uncaughtException', (err) => {
  emit({ event: 'exception', message: errorText(err), stack: err?.stack ?? null })
})
process.on('unhandledRejection', (err) => {
  emit({ event: 'exception', message: errorText(err), stack: err?.stack ?? null })
})

const args = parseArgs(process.argv.slice(2))

// The socket the library opens: text frames are already in its `push` log,
// binary ones (which the log shows before encoding) are reported here.
class ReportingWebSocket extends WebSocket {
  send(data, ...rest) {
    if (typeof data !== 'string') {
      const bytes = ArrayBuffer.isView(data)
        ? Buffer.from(data.buffer, data.byteOffset, data.byteLength)
        : Buffer.from(data)
      emit({ event: 'sent', hex: bytes.toString('hex') })
    }
    return super.send(data, ...rest)
  }
}
const logger = (kind, msg, data) => emit({ event: 'log', kind, msg, data: data ?? null })

function makeRealtime() {
  const options = { params: { apikey: args.apikey }, transport: ReportingWebSocket, logger }
  if (args.vsn) options.vsn = args.vsn
  const client = new RealtimeClient(args.url.replace(/^http/, 'ws') + '/realtime/v1', options)
  return { realtime: client, channel: (topic, params) => client.channel(topic, params) }
}

// supabase-js reads the token through its accessToken callback, as an app
// with its own auth does; `set_auth` changes what the callback returns.
let currentToken = args.token

function makeSupabase() {
  const options = {
    realtime: { transport: ReportingWebSocket, logger },
    // A script has no browser storage; do not start timers that outlive it.
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  }
  if (args.token) options.accessToken = async () => currentToken
  const supabase = createClient(args.url, args.apikey, options)
  return { realtime: supabase.realtime, channel: (topic, params) => supabase.channel(topic, params) }
}

const client = args.client === 'supabase-js' ? makeSupabase() : makeRealtime()
const channels = new Map()

function channelFor(topic, config) {
  if (!channels.has(topic)) {
    const channel = client.channel(topic, config ? { config } : undefined)
    channel.on('system', {}, (payload) => emit({ event: 'system', topic, payload }))
    channels.set(topic, channel)
  }
  return channels.get(topic)
}

function joined(topic) {
  const channel = channels.get(topic)
  if (!channel) throw new Error(`no channel for topic ${topic}`)
  return channel
}

const commands = {
  async subscribe({ topic, config, postgres_changes: bindings = [] }) {
    const channel = channelFor(topic, config)
    bindings.forEach((binding, index) => {
      channel.on('postgres_changes', binding, (payload) =>
        emit({ event: 'postgres_changes', topic, binding: index, payload }),
      )
    })
    channel.subscribe((status, err) => emit({ event: 'status', topic, status, error: errorText(err) }))
  },
  async on_broadcast({ topic, event, config, resume }) {
    // `resume`: as an app keeping its place does (README, Resume cursor), the
    // callback moves the `replay.since` it joined with to the last `meta.id`
    // (a string of digits; `since` is a number),
    // so the client's own rejoin (after a reconnect) resumes from there.
    const replay = config?.broadcast?.replay
    channelFor(topic, config).on('broadcast', { event }, (payload) => {
      if (resume && replay && payload?.meta?.id !== undefined) replay.since = Number(payload.meta.id)
      emit({ event: 'broadcast', topic, payload })
    })
  },
  async on_presence({ topic, event, config }) {
    const channel = channelFor(topic, config)
    channel.on('presence', { event }, (payload) =>
      emit({ event: 'presence', topic, kind: event, payload: payload ?? null, state: channel.presenceState() }),
    )
  },
  async send({ topic, event, payload }) {
    return await joined(topic).send({ type: 'broadcast', event, payload })
  },
  async http_send({ topic, event, payload }) {
    return await joined(topic).httpSend(event, payload)
  },
  async track({ topic, payload }) {
    return await joined(topic).track(payload)
  },
  async untrack({ topic }) {
    return await joined(topic).untrack()
  },
  async set_auth({ token }) {
    if (args.client === 'supabase-js' && currentToken) {
      currentToken = token
      await client.realtime.setAuth()
    } else {
      await client.realtime.setAuth(token)
    }
  },
  async unsubscribe({ topic }) {
    const result = await joined(topic).unsubscribe()
    channels.delete(topic)
    return result
  },
  async close() {
    client.realtime.disconnect()
    emit({ event: 'closed' })
    process.exit(0)
  },
}

async function handle(line) {
  let command
  try {
    command = JSON.parse(line)
    const run = commands[command.cmd]
    if (!run) throw new Error(`unknown command ${command.cmd}`)
    const result = await run(command)
    emit({ event: 'done', cmd: command.cmd, id: command.id ?? null, result: result ?? null })
  } catch (err) {
    emit({ event: 'error', cmd: command?.cmd ?? null, id: command?.id ?? null, message: errorText(err) })
  }
}

if (args.token && args.client !== 'supabase-js') await client.realtime.setAuth(args.token)

// Commands run one at a time, in the order they came.
let queue = Promise.resolve()
const input = createInterface({ input: process.stdin })
input.on('line', (line) => {
  if (line.trim()) queue = queue.then(() => handle(line))
})
input.on('close', () => queue.then(() => commands.close()))
emit({ event: 'ready', client: args.client, vsn: client.realtime.vsn ?? null })
