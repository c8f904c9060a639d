/*
 * A native rrbalancer worker in C, written from docs/PROTOCOL.md alone: it takes connections
 * from its channel one `conn` message at a time, acks them, answers one HTTP request on each
 * (`Connection: close`), says `idle` before its last answer, and exits on `stop`. At its
 * open-file limit the kernel cuts a `conn` message short (MSG_CTRUNC): it closes what came,
 * gives the whole message back with `full N` and carries on.
 *
 *   cc -O2 -Wall -o worker examples/c/worker.c
 *   [worker] exec = "./worker"   (protocol = "native", the default)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_MESSAGE 8192
#define MAX_FDS 64

static int channel;

static void say(const char *text) {
    /* One send is one message (SOCK_SEQPACKET). */
    while (send(channel, text, strlen(text), MSG_NOSIGNAL) < 0) {
        if (errno != EINTR) {
            perror("worker: send");
            exit(1);
        }
    }
}

/* Reads a request head (up to the blank line), answers it and closes the connection. `last`:
   the last connection we hold: say `idle` before answering, so that a client who connects again
   the moment it has its answer finds us free already. */
static void serve(int fd, const char *id, int last) {
    char buf[4096];
    size_t got = 0;
    while (got < sizeof buf - 1) {
        ssize_t n = read(fd, buf + got, sizeof buf - 1 - got);
        if (n <= 0) break;
        got += (size_t)n;
        buf[got] = 0;
        if (strstr(buf, "\r\n\r\n")) break;
    }
    char body[128], answer[256];
    int len = snprintf(body, sizeof body, "handled by worker %s (c), pid %d\n", id, (int)getpid());
    int n = snprintf(answer, sizeof answer,
                     "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
                     "connection: close\r\n\r\n%s",
                     len, body);
    if (last) say("idle\n");
    if (write(fd, answer, (size_t)n) < 0) { /* the client left: nothing to do */ }
    close(fd);
}

int main(void) {
    const char *fd_text = getenv("RRB_CHANNEL_FD");
    const char *id = getenv("RRB_WORKER_ID");
    if (!fd_text) {
        fprintf(stderr, "worker: RRB_CHANNEL_FD is not set: start me from rrbalancer\n");
        return 2;
    }
    channel = atoi(fd_text);
    if (!id) id = "?";
    say("idle\n"); /* pulled: never handed a connection while busy */
    say("ready\n");
    for (;;) {
        char data[MAX_MESSAGE + 1];
        union {
            char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
            struct cmsghdr align;
        } control;
        struct iovec iov = {.iov_base = data, .iov_len = MAX_MESSAGE};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                             .msg_control = control.buf, .msg_controllen = sizeof control.buf};
        ssize_t n = recvmsg(channel, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return 0; /* the master is gone */
        data[n] = 0;

        int fds[MAX_FDS], nfds = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
                for (int i = 0; i < k && nfds < MAX_FDS; i++)
                    memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            }
        }
        if (strncmp(data, "stop", 4) == 0) return 0;
        int announced = 0;
        if (sscanf(data, "conn %d", &announced) != 1) continue; /* not for us: `message`s */
        if (msg.msg_flags & MSG_CTRUNC || announced != nfds) {
            /* At the open-file limit: which line goes with which fd is unknown. Read none,
               give the whole message back; we hold nothing now, so we may say idle again. */
            for (int i = 0; i < nfds; i++) close(fds[i]);
            char full[32];
            snprintf(full, sizeof full, "full %d\n", announced);
            say(full);
            say("idle\n");
            continue;
        }
        char ack[32];
        snprintf(ack, sizeof ack, "ack %d\n", nfds);
        say(ack); /* ours now: before reading a byte */
        for (int i = 0; i < nfds; i++) serve(fds[i], id, i == nfds - 1);
    }
}
