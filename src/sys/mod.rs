//! Every `unsafe` block and every raw file-descriptor number in rrbalancer lives here.
//!
//! Three jobs need the raw OS, one file each: passing sockets over a Unix channel
//! (`sendmsg`/`recvmsg` with `SCM_RIGHTS`) and taking inherited fds ([`fds`]); starting a worker
//! with exactly the fds it should inherit at exactly the numbers it expects ([`spawn`](mod@spawn));
//! process-wide settings and daemonizing ([`process`]). Everything outside this module deals in
//! `OwnedFd`/`BorrowedFd` and typed sockets. Each `unsafe` block says, in a `SAFETY:` line, who
//! owns which fd after it. Nothing here imports the rest of the crate.
//!
//! Why not the `sendfd` crate here: it takes std `UnixStream`/`UnixDatagram` only (our channel is
//! `SOCK_SEQPACKET`), sends without `MSG_NOSIGNAL`, receives without `MSG_CMSG_CLOEXEC` and does
//! not report `MSG_CTRUNC`; each of those is a lost or leaked connection for us.

mod fds;
mod process;
mod spawn;

pub use fds::*;
pub use process::*;
pub use spawn::*;
