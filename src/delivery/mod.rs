//! Getting a line to the clients that should have it: who is connected and in which room
//! (`registry`), each client's bounded queue and how it reaches the client's socket (`peer`),
//! the one thread that serves every client's queue in turn (`deliverer`), the shared bytes of
//! a line (`chunk`, with its WebSocket frames in `ws_frame` and its `relayd.v1.json` events in
//! `json_event`), room history (`history`), every
//! line relayd writes itself and why a client left (`notice`), and `--console`'s printed copy
//! (`echo`).

pub(crate) mod chunk;
pub(crate) mod deliverer;
pub(crate) mod echo;
pub(crate) mod history;
pub(crate) mod json_event;
pub(crate) mod line_id;
pub(crate) mod notice;
pub(crate) mod peer;
pub(crate) mod registry;
pub(crate) mod ws_frame;
