/*
 * worker.c - a fixed pool of pthreads with one job queue in and one
 * completion queue out.  Completions wake the loop through a pipe; the loop
 * drains the completion queue and runs each done callback.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>
#include <event2/event.h>
#include "worker.h"

struct job {
    void (*work)(void *);
    void (*done)(void *);
    void *arg;
    struct job *next;
};

struct worker_pool {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct job *in_head, *in_tail;     /* waiting for a thread */
    struct job *out_head, *out_tail;   /* waiting for the loop */
    size_t running;                    /* jobs taken by threads, not yet in out */
    bool stopping;
    pthread_t *threads;
    int n_threads;
    int pipe_r, pipe_w;
    struct event *ev;
};

static void push(struct job **head, struct job **tail, struct job *j)
{
    j->next = NULL;
    if (*tail)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
}

static void *thread_main(void *arg)
{
    struct worker_pool *p = arg;

    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (p->in_head == NULL && !p->stopping)
            pthread_cond_wait(&p->cond, &p->lock);
        struct job *j = p->in_head;
        if (j == NULL)
            break;   /* stopping, and nothing left to do */
        p->in_head = j->next;
        if (p->in_head == NULL)
            p->in_tail = NULL;
        p->running++;
        pthread_mutex_unlock(&p->lock);

        j->work(j->arg);

        pthread_mutex_lock(&p->lock);
        p->running--;
        bool wake = p->out_head == NULL;
        push(&p->out_head, &p->out_tail, j);
        if (wake) {
            char c = 1;
            while (write(p->pipe_w, &c, 1) < 0 && errno == EINTR)
                ;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static void drain(struct worker_pool *p)
{
    char buf[64];
    while (read(p->pipe_r, buf, sizeof buf) > 0)
        ;
    pthread_mutex_lock(&p->lock);
    struct job *j = p->out_head;
    p->out_head = p->out_tail = NULL;
    pthread_mutex_unlock(&p->lock);
    while (j) {
        struct job *next = j->next;
        j->done(j->arg);
        free(j);
        j = next;
    }
}

static void on_pipe(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    drain(arg);
}

struct worker_pool *worker_pool_create(struct event_base *base, int threads, struct error *err)
{
    int fds[2];

    if (threads < 1)
        threads = 1;
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
        error_set(err, NULL, "worker pool: pipe: %s", strerror(errno));
        return NULL;
    }
    struct worker_pool *p = xcalloc(1, sizeof *p);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->pipe_r = fds[0];
    p->pipe_w = fds[1];
    p->ev = event_new(base, p->pipe_r, EV_READ | EV_PERSIST, on_pipe, p);
    event_add(p->ev, NULL);
    p->threads = xcalloc((size_t)threads, sizeof *p->threads);
    for (int i = 0; i < threads; i++) {
        int rc = pthread_create(&p->threads[i], NULL, thread_main, p);
        if (rc != 0) {
            error_set(err, NULL, "worker pool: pthread_create: %s", strerror(rc));
            p->n_threads = i;
            worker_pool_free(p);
            return NULL;
        }
        p->n_threads = i + 1;
    }
    return p;
}

void worker_submit(struct worker_pool *p, void (*work)(void *), void (*done)(void *), void *arg)
{
    struct job *j = xmalloc(sizeof *j);
    j->work = work;
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&p->lock);
    push(&p->in_head, &p->in_tail, j);
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

void worker_pool_free(struct worker_pool *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
    drain(p);   /* every done callback runs, as promised */
    event_free(p->ev);
    close(p->pipe_r);
    close(p->pipe_w);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    free(p->threads);
    free(p);
}
