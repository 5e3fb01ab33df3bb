//! `Router`: commands by name, and connection life-cycle hooks.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use zs_wire::DataFrame;

use super::responder::{RawResponder, Responder};
use super::{Access, CommandFigures, Guard, Identity, Meter};
use super::{Form, IntoReply, Payload, PayloadType, Text};
use crate::bulk::{BufferHandler, BulkHandler};
use crate::connection::close::CloseReason;
use crate::error::HandlerError;
use crate::mux::{Incoming, VirtualListener, DEFAULT_BACKLOG};
use crate::peer::Peer;
use crate::session::SessionEvent;

pub(crate) type SyncFn = dyn Fn(&Peer, Payload) -> Result<Payload, HandlerError> + Send + Sync;
pub(crate) type AsyncFn =
    dyn Fn(Peer, Payload) -> BoxFuture<'static, Result<Payload, HandlerError>> + Send + Sync;
pub(crate) type DelayedFn = dyn Fn(&Peer, Payload, RawResponder) + Send + Sync;
type ConnectHook = dyn Fn(&Peer) + Send + Sync;
type DisconnectHook = dyn Fn(&Peer, &CloseReason) + Send + Sync;
type SessionHook = dyn Fn(&Peer, &SessionEvent) + Send + Sync;
type LoginHook = dyn Fn(&Peer, Option<&Identity>) + Send + Sync;

/// How a handler runs.
pub(crate) enum Exec {
    /// On the connection's task, at once (cheap handlers).
    Inline(Box<SyncFn>),
    /// As a future polled by the connection's task, concurrently with other calls.
    Async(Box<AsyncFn>),
    /// Inline, but the reply comes later through a `Responder`.
    Delayed(Box<DelayedFn>),
    /// On the blocking worker pool; the reply is skipped if the peer has gone.
    Hpc(Arc<SyncFn>),
    /// Receives big streams (not calls).
    BigStream(Arc<BulkHandler>),
    /// Receives complete buffers (not calls).
    Buffer(Arc<BufferHandler>),
}

/// A registered command.
pub(crate) struct Command {
    pub(crate) name: Box<str>,
    pub(crate) form: Form,
    /// One-way: no reply is sent.
    pub(crate) direct: bool,
    /// Calls run one at a time in arrival order.
    pub(crate) ordered: bool,
    /// What its caller must be (logged in, a role); `None`: anyone.
    pub(crate) access: Option<Box<Access>>,
    pub(crate) exec: Exec,
    /// Its calls, errors and latency, when the router meters commands.
    pub(crate) meter: Option<Arc<Meter>>,
}

/// Commands registered by name (case-insensitive, as in ZServer4D), and hooks run when a
/// connection opens and closes. Servers and clients both have one: either end can call
/// the other.
#[derive(Default)]
pub struct Router {
    /// FxHash: the names are the server's own, fixed when it starts.
    commands: rustc_hash::FxHashMap<Box<str>, Arc<Command>>,
    pub(crate) on_connect: Vec<Box<ConnectHook>>,
    pub(crate) on_disconnect: Vec<Box<DisconnectHook>>,
    pub(crate) on_session: Vec<Box<SessionHook>>,
    pub(crate) on_login: Vec<Box<LoginHook>>,
    /// Virtual channel listeners by service name.
    listeners: HashMap<Box<str>, tokio::sync::mpsc::Sender<Incoming>>,
    /// Service names whose virtual channels this router serves as full peers.
    peer_services: std::collections::HashSet<Box<str>>,
    /// Checks run before every handler, in order.
    pub(crate) guards: Vec<Guard>,
    /// Names of the services mounted.
    services: Vec<String>,
    /// Commands count their calls, errors and latency.
    metering: bool,
}

/// A named bundle of commands, hooks and state that mounts on a [`Router`]: accounts,
/// files, push... A server is composed of services.
pub trait Service: Send + Sync + 'static {
    /// The service's name (unique within a router).
    fn name(&self) -> &str;
    /// Registers its commands, hooks and guards.
    fn mount(self: Arc<Self>, router: &mut Router);
}

/// Options of a command just registered.
pub struct CommandOptions<'a> {
    command: &'a mut Command,
}

impl CommandOptions<'_> {
    /// Run this command's calls one at a time in arrival order: the next does not start
    /// until the previous one has replied (the original's behaviour).
    pub fn ordered(self) -> Self {
        self.command.ordered = true;
        self
    }

    /// Only a logged-in caller may use this command ([`Peer::user`]); others get
    /// `NotLoggedIn`.
    pub fn requires_login(self) -> Self {
        self.command.access.get_or_insert_with(Box::default);
        self
    }

    /// Only a caller with `role` may use this command; others get `NotLoggedIn` or
    /// `Forbidden`.
    pub fn requires_role(self, role: &str) -> Self {
        self.command.access.get_or_insert_with(Box::default).role = Some(role.into());
        self
    }
}

fn typed<P: PayloadType>(p: Payload) -> P {
    // The connection decodes a payload of the command's form before calling it.
    P::from_payload(p).expect("payload of the registered form")
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Router::default()
    }

    /// Whether a command of this name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Adds a check that runs before every handler (calls, direct commands, streams and
    /// buffers), given the peer and the command's name: `Err` refuses the call with its code
    /// and message (`NotLoggedIn`, `Forbidden`, `RateLimited`...) and the handler does not
    /// run. Guards run in the order they were added, after the command's own
    /// `requires_login`/`requires_role`.
    pub fn guard(
        &mut self,
        check: impl Fn(&Peer, &str) -> Result<(), HandlerError> + Send + Sync + 'static,
    ) -> &mut Self {
        self.guards.push(Arc::new(check));
        self
    }

    /// Mounts a service: its commands, hooks and guards join this router.
    ///
    /// # Panics
    /// If a service of that name, or one of its commands, is already there.
    pub fn mount<S: Service>(&mut self, service: S) -> &mut Self {
        let service = Arc::new(service);
        let name = service.name().to_owned();
        assert!(!self.services.contains(&name), "service `{name}` is mounted twice");
        service.mount(self);
        self.services.push(name);
        self
    }

    /// Counts each command's calls, errors and latency (from a call's start to its reply),
    /// commands registered before and after alike: see [`Router::command_figures`]. A few
    /// atomic adds and a clock read or two per call; off unless asked for.
    pub fn meter_commands(&mut self) -> &mut Self {
        self.metering = true;
        for command in self.commands.values_mut() {
            if let Some(c) = Arc::get_mut(command) {
                c.meter.get_or_insert_with(Arc::default);
            }
        }
        self
    }

    /// Each metered command's figures now, by name.
    pub fn command_figures(&self) -> Vec<CommandFigures> {
        let mut all: Vec<CommandFigures> =
            self.commands.values().filter_map(|c| c.meter.as_ref().map(|m| m.figures(&c.name))).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Names of the services mounted, in order.
    pub fn services(&self) -> &[String] {
        &self.services
    }

    /// Whether `peer` may call `cmd` now: its access rule, then every guard.
    pub(crate) fn admit(&self, peer: &Peer, cmd: &Command) -> Result<(), HandlerError> {
        if let Some(access) = &cmd.access {
            access.check(peer, &cmd.name)?;
        }
        for guard in &self.guards {
            guard(peer, &cmd.name)?;
        }
        Ok(())
    }

    /// The command registered under `name`, compared case-insensitively.
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Command>> {
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.commands.get(name.to_ascii_lowercase().as_str())
        } else {
            self.commands.get(name)
        }
    }

    fn add(&mut self, name: &str, form: Form, direct: bool, exec: Exec) -> CommandOptions<'_> {
        assert!(!name.is_empty() && name.len() <= 255, "command name must be 1 to 255 bytes: {name:?}");
        let key: Box<str> = name.to_ascii_lowercase().into();
        assert!(!self.commands.contains_key(&key), "command `{name}` is registered twice");
        let meter = self.metering.then(Arc::default);
        let command = Command { name: name.into(), form, direct, ordered: false, access: None, exec, meter };
        let slot = self.commands.entry(key).or_insert(Arc::new(command));
        CommandOptions { command: Arc::get_mut(slot).expect("just inserted") }
    }

    fn sync<P: PayloadType, R: IntoReply<P>>(
        f: impl Fn(&Peer, P) -> R + Send + Sync + 'static,
    ) -> impl Fn(&Peer, Payload) -> Result<Payload, HandlerError> + Send + Sync + 'static {
        move |peer, p| f(peer, typed(p)).into_reply().map(P::into_payload)
    }

    fn add_sync<P: PayloadType, R: IntoReply<P>>(
        &mut self,
        name: &str,
        direct: bool,
        f: impl Fn(&Peer, P) -> R + Send + Sync + 'static,
    ) -> CommandOptions<'_> {
        self.add(name, P::FORM, direct, Exec::Inline(Box::new(Self::sync(f))))
    }

    fn add_async<P: PayloadType, R: IntoReply<P>, F>(
        &mut self,
        name: &str,
        direct: bool,
        f: impl Fn(Peer, P) -> F + Send + Sync + 'static,
    ) -> CommandOptions<'_>
    where
        F: Future<Output = R> + Send + 'static,
    {
        let exec = move |peer, p| f(peer, typed(p)).map(|r| r.into_reply().map(P::into_payload)).boxed();
        self.add(name, P::FORM, direct, Exec::Async(Box::new(exec)))
    }

    fn add_delayed<P: PayloadType>(
        &mut self,
        name: &str,
        f: impl Fn(&Peer, P, Responder<P>) + Send + Sync + 'static,
    ) -> CommandOptions<'_> {
        let exec = move |peer: &Peer, p, raw| f(peer, typed(p), Responder::new(raw));
        self.add(name, P::FORM, false, Exec::Delayed(Box::new(exec)))
    }

    fn add_hpc<P: PayloadType, R: IntoReply<P>>(
        &mut self,
        name: &str,
        direct: bool,
        f: impl Fn(&Peer, P) -> R + Send + Sync + 'static,
    ) -> CommandOptions<'_> {
        self.add(name, P::FORM, direct, Exec::Hpc(Arc::new(Self::sync(f))))
    }

    /// Console command: text in, text out; runs at once on the connection's task, so it
    /// must be quick and must not block.
    pub fn console<R: IntoReply<Text>>(
        &mut self,
        name: &str,
        f: impl Fn(&Peer, Text) -> R + Send + Sync + 'static,
    ) -> CommandOptions<'_> {
        self.add_sync(name, false, f)
    }

    /// Stream command: DataFrame in, DataFrame out; runs at once on the connection's task.
    pub fn stream<R: IntoReply<DataFrame>>(
        &mut self,
        name: &str,
        f: impl Fn(&Peer, DataFrame) -> R + Send + Sync + 'static,
    ) -> CommandOptions<'_> {
        self.add_sync(name, false, f)
    }

    /// Direct (one-way) console command: no reply.
    pub fn direct_console(
        &mut self,
        name: &str,
        f: impl Fn(&Peer, Text) + Send + Sync + 'static,
    ) -> CommandOptions<'_> {
        self.add_sync(name, true, move |peer: &Peer, t: Text| {
            f(peer, t);
            Text::default()
        })
    }

    /// Direct (one-way) stream command: no reply.
    pub fn direct_stream(
        &mut self,
        name: &str,
        f: impl Fn(&Peer, DataFrame) + Send + Sync + 'static,
    ) -> CommandOptions<'_> {
        self.add_sync(name, true, move |peer: &Peer, d: DataFrame| {
            f(peer, d);
            DataFrame::new()
        })
    }

    /// Async console command: the future runs concurrently with the connection's other
    /// calls (it may await other calls, timers, IO).
    pub fn console_async<R: IntoReply<Text>, F: Future<Output = R> + Send + 'static>(
        &mut self,
        name: &str,
        f: impl Fn(Peer, Text) -> F + Send + Sync + 'static,
    ) -> CommandOptions<'_> {
        self.add_async(name, false, f)
    }

    /// Async stream command.
    pub fn stream_async<R: IntoReply<DataFrame>, F: Future<Output = R> + Send + 'static>(
        &mut self,
        name: &str,
        f: impl Fn(Peer, DataFrame) -> F + Send + Sync + 'static,
    ) -> CommandOptions<'_> {
        self.add_async(name, false, f)
    }

    /// Console command with a delayed reply: the handler keeps the `Responder` and answers
    /// later from any task or thread.
    pub fn console_delayed(
        &mut self,
        name: &str,
        f: impl Fn(&Peer, Text, Responder<Text>) + Send + Sync + 'static,
    ) -> CommandOptions<'_> {
        self.add_delayed(name, f)
    }

    /// Stream command with a delayed reply.
    pub fn stream_delayed(
        &mut self,
        name: &str,
        f: impl Fn(&Peer, DataFrame, Responder<DataFrame>) + Send + Sync + 'static,
    ) -> CommandOptions<'_> {
        self.add_delayed(name, f)
    }

    /// HPC console command: a heavy or blocking handler run on the worker pool; the reply
    /// is sent when it is done, and skipped if the peer has gone.
    pub fn hpc_console<R: IntoReply<Text>>(
        &mut self,
        name: &str,
        f: impl Fn(&Peer, Text) -> R + Send + Sync + 'static,
    ) -> CommandOptions<'_> {
        self.add_hpc(name, false, f)
    }

    /// HPC stream command.
    pub fn hpc_stream<R: IntoReply<DataFrame>>(
        &mut self,
        name: &str,
        f: impl Fn(&Peer, DataFrame) -> R + Send + Sync + 'static,
    ) -> CommandOptions<'_> {
        self.add_hpc(name, false, f)
    }

    /// HPC direct stream command: run on the worker pool, no reply.
    pub fn hpc_direct_stream(
        &mut self,
        name: &str,
        f: impl Fn(&Peer, DataFrame) + Send + Sync + 'static,
    ) -> CommandOptions<'_> {
        self.add_hpc(name, true, move |peer: &Peer, d: DataFrame| {
            f(peer, d);
            DataFrame::new()
        })
    }

    /// Big-stream command: receives streams of any size sent with
    /// [`Peer::send_big_stream`]; the handler reads the [`IncomingStream`] (chunks or
    /// `AsyncRead`) and returns when done. The sender learns the outcome: success only if
    /// the whole stream arrived, matched its BLAKE3 hash, and the handler returned `Ok`.
    ///
    /// [`IncomingStream`]: crate::bulk::IncomingStream
    pub fn big_stream<F, E>(
        &mut self,
        name: &str,
        f: impl Fn(Peer, crate::bulk::IncomingStream) -> F + Send + Sync + 'static,
    ) -> CommandOptions<'_>
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<HandlerError>,
    {
        let exec = move |peer, stream| f(peer, stream).map(|r| r.map_err(Into::into)).boxed();
        self.add(name, Form::Stream, true, Exec::BigStream(Arc::new(exec)))
    }

    /// Complete-buffer command: receives one binary message sent with
    /// [`Peer::send_complete_buffer`], whole and verified, up to
    /// `BulkConfig::max_buffer_len`.
    pub fn complete_buffer<E: Into<HandlerError>>(
        &mut self,
        name: &str,
        f: impl Fn(&Peer, bytes::Bytes) -> Result<(), E> + Send + Sync + 'static,
    ) -> CommandOptions<'_> {
        let exec = move |peer: &Peer, data, _ticket| f(peer, data).map_err(Into::into);
        self.add(name, Form::Stream, true, Exec::Buffer(Arc::new(exec)))
    }

    /// [`complete_buffer`](Self::complete_buffer) whose handler is also given the buffer's
    /// ticket ([`Peer::send_complete_buffer_ticketed`]): the call that prepared it kept a
    /// value under it ([`Peer::issue_ticket`]), which the handler takes back.
    pub fn complete_buffer_ticketed<E: Into<HandlerError>>(
        &mut self,
        name: &str,
        f: impl Fn(&Peer, bytes::Bytes, Option<u64>) -> Result<(), E> + Send + Sync + 'static,
    ) -> CommandOptions<'_> {
        let exec = move |peer: &Peer, data, ticket| f(peer, data, ticket).map_err(Into::into);
        self.add(name, Form::Stream, true, Exec::Buffer(Arc::new(exec)))
    }

    /// Runs when a connection opens, before any of its frames is handled.
    pub fn on_connect(&mut self, f: impl Fn(&Peer) + Send + Sync + 'static) -> &mut Self {
        self.on_connect.push(Box::new(f));
        self
    }

    /// Runs once when a connection has closed, with the reason.
    pub fn on_disconnect(&mut self, f: impl Fn(&Peer, &CloseReason) + Send + Sync + 'static) -> &mut Self {
        self.on_disconnect.push(Box::new(f));
        self
    }

    /// Runs when a connection's login changes ([`Peer::set_user`]): a login, a logout, or
    /// another account; with the identity it had before (the new one is [`Peer::user`]).
    pub fn on_login(&mut self, f: impl Fn(&Peer, Option<&Identity>) + Send + Sync + 'static) -> &mut Self {
        self.on_login.push(Box::new(f));
        self
    }

    /// Runs when a resumable session's link drops, when it resumes, and when it expires.
    pub fn on_session(&mut self, f: impl Fn(&Peer, &SessionEvent) + Send + Sync + 'static) -> &mut Self {
        self.on_session.push(Box::new(f));
        self
    }

    /// Listens for virtual channels the other end opens to service `name`, on any
    /// connection served with this router; up to [`DEFAULT_BACKLOG`] opens wait to be
    /// accepted, more are refused. A second listener for a name replaces the first.
    pub fn listen(&mut self, name: &str) -> VirtualListener {
        self.listen_with_backlog(name, DEFAULT_BACKLOG)
    }

    /// [`listen`](Self::listen) with a backlog of `backlog` opens.
    pub fn listen_with_backlog(&mut self, name: &str, backlog: usize) -> VirtualListener {
        let (listener, tx) = VirtualListener::new(name.into(), backlog);
        self.listeners.insert(name.into(), tx);
        listener
    }

    /// Serves virtual channels the other end opens to service `name` as full peers of this
    /// router (its commands, push, bulk; `on_connect` runs for each, with its own `Peer`).
    pub fn serve_channels(&mut self, name: &str) -> &mut Self {
        self.peer_services.insert(name.into());
        self
    }

    fn serves_channels(&self, name: &str) -> bool {
        self.peer_services.contains(name)
    }

    pub(crate) fn listener(&self, name: &str) -> Option<&tokio::sync::mpsc::Sender<Incoming>> {
        self.listeners.get(name)
    }
}

impl crate::mux::Services for Router {
    fn serves_peer(&self, name: &str) -> bool {
        self.serves_channels(name)
    }
    fn listener(&self, name: &str) -> Option<&tokio::sync::mpsc::Sender<Incoming>> {
        Router::listener(self, name)
    }
}
