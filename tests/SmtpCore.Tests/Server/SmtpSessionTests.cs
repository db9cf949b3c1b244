using Portcullis.SmtpCore.Server;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Server;

// What a transcript cannot show: time, replies that arrive later, handlers that fail, clients that vanish.
public class SmtpSessionTests
{
    private static SmtpServerOptions Options(TimeSpan? command = null, TimeSpan? data = null) => new()
    {
        HostName = "mx.test",
        CommandTimeout = command ?? TimeSpan.FromSeconds(30),
        DataTimeout = data ?? TimeSpan.FromSeconds(30),
    };

    private static async Task<LoopbackSession> GreetedAsync(RecordingHandler handler, SmtpServerOptions? options = null)
    {
        var conn = await LoopbackSession.StartAsync(options ?? Options(), handler);
        Assert.Equal("220 mx.test ESMTP", await conn.ReadLineAsync());
        await conn.SendAsync("EHLO client.test\r\n");
        string? line;
        do line = await conn.ReadLineAsync(); while (line is not null && line.StartsWith("250-", StringComparison.Ordinal));
        Assert.Equal("250 CHUNKING", line);
        return conn;
    }

    private static async Task<List<string?>> ReadLinesAsync(LoopbackSession conn, int count)
    {
        var lines = new List<string?>();
        for (int i = 0; i < count; i++) lines.Add(await conn.ReadLineAsync());
        return lines;
    }

    [Fact]
    public async Task Idle_client_gets_421_and_the_connection_closes()
    {
        var handler = new RecordingHandler();
        await using var conn = await GreetedAsync(handler, Options(command: TimeSpan.FromSeconds(1)));
        await conn.SendAsync("MAIL FROM:<a@example.org>\r\n");
        Assert.Equal("250 2.1.0 Sender OK", await conn.ReadLineAsync());
        // Say nothing more: the server gives up, says why and closes (RFC 5321 §4.5.3.2.7).
        Assert.Equal("421 4.4.2 mx.test Timeout waiting for command, closing connection", await conn.ReadLineAsync());
        Assert.Equal("", await conn.ReadToEndAsync());
        await conn.WaitForSessionEndAsync();
        Assert.Contains("aborted", handler.Events);
        Assert.Equal("close", handler.Events[^1]);
    }

    [Fact]
    public async Task Client_trickling_a_command_a_byte_at_a_time_still_times_out()
    {
        var handler = new RecordingHandler();
        // Long enough that a loaded test machine still gets EHLO in; the trickle outlasts it fourfold.
        await using var conn = await GreetedAsync(handler, Options(command: TimeSpan.FromSeconds(2)));
        // Slowloris: a byte every 50 ms, never a line end. Each byte arrives well inside the
        // timeout, so only a deadline for the whole line can end this.
        using var stop = new CancellationTokenSource();
        bool ranOut = false; // the client sent everything it had: only then could a per-read timeout fire
        var trickle = Task.Run(async () =>
        {
            for (int i = 0; i < 160 && !stop.IsCancellationRequested; i++)
            {
                try { await conn.SendAsync([(byte)"NOOP "[i % 5]]); } catch (IOException) { return; }
                await Task.Delay(50, CancellationToken.None); // the attack's own pace, not synchronisation
            }
            Volatile.Write(ref ranOut, !stop.IsCancellationRequested);
        });

        Assert.Equal("421 4.4.2 mx.test Timeout waiting for command, closing connection", await conn.ReadLineAsync());
        Assert.False(Volatile.Read(ref ranOut), "the 421 came only after the client stopped sending");
        stop.Cancel();
        await trickle;
        await conn.WaitForSessionEndAsync();
    }

    [Fact]
    public async Task Client_trickling_message_content_still_times_out_and_nothing_is_delivered()
    {
        var handler = new RecordingHandler();
        await using var conn = await GreetedAsync(handler, Options(data: TimeSpan.FromMilliseconds(400)));
        await conn.SendAsync("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
        Assert.Equal(["250 2.1.0 Sender OK", "250 2.1.5 Recipient OK", "354 End data with <CR><LF>.<CR><LF>"], await ReadLinesAsync(conn, 3));
        using var stop = new CancellationTokenSource();
        bool ranOut = false;
        var trickle = Task.Run(async () =>
        {
            for (int i = 0; i < 160 && !stop.IsCancellationRequested; i++)
            {
                try { await conn.SendAsync([(byte)'x']); } catch (IOException) { return; }
                await Task.Delay(50, CancellationToken.None); // the attack's own pace, not synchronisation
            }
            Volatile.Write(ref ranOut, !stop.IsCancellationRequested);
        });

        Assert.Equal("421 4.4.2 mx.test Timeout waiting for message data, closing connection", await conn.ReadLineAsync());
        Assert.False(Volatile.Read(ref ranOut), "the 421 came only after the client stopped sending");
        stop.Cancel();
        await trickle;
        await conn.WaitForSessionEndAsync();
        Assert.Empty(handler.Messages);
    }

    [Fact]
    public async Task Client_stalling_in_DATA_gets_421_and_nothing_is_delivered()
    {
        var handler = new RecordingHandler();
        await using var conn = await GreetedAsync(handler, Options(data: TimeSpan.FromSeconds(1)));
        await conn.SendAsync("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
        Assert.Equal(["250 2.1.0 Sender OK", "250 2.1.5 Recipient OK", "354 End data with <CR><LF>.<CR><LF>"], await ReadLinesAsync(conn, 3));
        await conn.SendAsync("partial content\r\n");
        Assert.Equal("421 4.4.2 mx.test Timeout waiting for message data, closing connection", await conn.ReadLineAsync());
        Assert.Equal("", await conn.ReadToEndAsync());
        await conn.WaitForSessionEndAsync();
        Assert.Empty(handler.Messages);
        Assert.Contains("aborted", handler.Events);
    }

    [Fact]
    public async Task Shutdown_says_421_and_closes()
    {
        var handler = new RecordingHandler();
        using var shutdown = new CancellationTokenSource();
        await using var conn = await LoopbackSession.StartAsync(Options(), handler, shutdown.Token);
        Assert.Equal("220 mx.test ESMTP", await conn.ReadLineAsync());
        await conn.SendAsync("HELO client.test\r\nMAIL FROM:<a@example.org>\r\n");
        Assert.Equal(["250 mx.test", "250 2.1.0 Sender OK"], await ReadLinesAsync(conn, 2));
        shutdown.Cancel();
        Assert.Equal("421 4.3.2 mx.test Service shutting down, try again later", await conn.ReadLineAsync());
        Assert.Equal("", await conn.ReadToEndAsync());
        await conn.WaitForSessionEndAsync();
        Assert.Equal(["aborted", "close"], handler.Events.TakeLast(2));
    }

    [Fact]
    public async Task Drain_lets_the_open_transaction_finish_then_says_421()
    {
        var handler = new RecordingHandler();
        using var drain = new CancellationTokenSource();
        await using var conn = await LoopbackSession.StartAsync(Options(), handler, drain: drain.Token);
        Assert.Equal("220 mx.test ESMTP", await conn.ReadLineAsync());
        await conn.SendAsync("HELO client.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
        Assert.Equal(4, (await ReadLinesAsync(conn, 4)).Count);

        drain.Cancel(); // mid-DATA: the message goes on
        await conn.SendAsync("Subject: drained\r\n\r\nbody\r\n.\r\n");
        Assert.StartsWith("250 ", await conn.ReadLineAsync());
        Assert.Equal("421 4.3.2 mx.test Service shutting down, try again later", await conn.ReadLineAsync());
        Assert.Equal("", await conn.ReadToEndAsync());
        await conn.WaitForSessionEndAsync();
        Assert.Single(handler.Messages);
    }

    [Fact]
    public async Task Drain_closes_an_idle_session_with_421_at_once()
    {
        var handler = new RecordingHandler();
        using var drain = new CancellationTokenSource();
        await using var conn = await LoopbackSession.StartAsync(Options(), handler, drain: drain.Token);
        Assert.Equal("220 mx.test ESMTP", await conn.ReadLineAsync());
        await conn.SendAsync("HELO client.test\r\n");
        Assert.Equal("250 mx.test", await conn.ReadLineAsync());

        drain.Cancel();
        Assert.Equal("421 4.3.2 mx.test Service shutting down, try again later", await conn.ReadLineAsync());
        Assert.Equal("", await conn.ReadToEndAsync());
        await conn.WaitForSessionEndAsync();
        Assert.Empty(handler.Messages);
    }

    [Fact]
    public async Task Connection_refused_by_policy_gets_its_banner_and_a_close()
    {
        var handler = new RecordingHandler { Refuse = new SmtpReply(554, "5.7.1", "mx.test No SMTP service for you") };
        await using var conn = await LoopbackSession.StartAsync(Options(), handler);
        Assert.Equal("554 5.7.1 mx.test No SMTP service for you", await conn.ReadLineAsync());
        Assert.Equal("", await conn.ReadToEndAsync());
        Assert.Equal(["connect", "close"], handler.Events);
    }

    [Fact]
    public async Task Deferred_replies_resolved_out_of_order_still_go_out_in_command_order()
    {
        var mail = new TaskCompletionSource<SmtpReply>(TaskCreationOptions.RunContinuationsAsynchronously);
        var rcpts = new List<TaskCompletionSource<SmtpReply>>();
        var bothRcpts = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var handler = new RecordingHandler
        {
            Mail = _ => new SmtpResponse(mail.Task),
            Rcpt = _ =>
            {
                var tcs = new TaskCompletionSource<SmtpReply>(TaskCreationOptions.RunContinuationsAsynchronously);
                lock (rcpts)
                {
                    rcpts.Add(tcs);
                    if (rcpts.Count == 2) bothRcpts.TrySetResult();
                }
                return new SmtpResponse(tcs.Task);
            },
        };
        await using var conn = await GreetedAsync(handler);
        await conn.SendAsync("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n");

        // The session sent all of them downstream before it waits for the first answer.
        await bothRcpts.Task.WaitAsync(LoopbackSession.Patience);
        rcpts[1].SetResult(new SmtpReply(550, "5.1.1", "No such user c"));
        rcpts[0].SetResult(new SmtpReply(250, "2.1.5", "b OK"));
        mail.SetResult(new SmtpReply(250, "2.1.0", "a OK"));

        Assert.Equal(["250 2.1.0 a OK", "250 2.1.5 b OK", "550 5.1.1 No such user c", "354 End data with <CR><LF>.<CR><LF>"],
            await ReadLinesAsync(conn, 4));
        await conn.SendAsync("hi\r\n.\r\n");
        Assert.Equal("250 2.0.0 Queued as M1", await conn.ReadLineAsync());
    }

    [Fact]
    public async Task A_deferred_MAIL_refusal_makes_the_pipelined_RCPTs_and_DATA_fail()
    {
        var mail = new TaskCompletionSource<SmtpReply>(TaskCreationOptions.RunContinuationsAsynchronously);
        var handler = new RecordingHandler { Mail = _ => new SmtpResponse(mail.Task) };
        await using var conn = await GreetedAsync(handler);
        await conn.SendAsync("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
        mail.SetResult(new SmtpReply(550, "5.7.1", "Sender refused"));
        Assert.Equal(["550 5.7.1 Sender refused", "503 5.5.1 Need MAIL before RCPT", "503 5.5.1 Need MAIL before DATA"],
            await ReadLinesAsync(conn, 3));
        // The session is in step: a new transaction works.
        handler.Mail = null;
        await conn.SendAsync("MAIL FROM:<a@example.org>\r\n");
        Assert.Equal("250 2.1.0 Sender OK", await conn.ReadLineAsync());
    }

    [Fact]
    public async Task An_immediate_refusal_waits_behind_a_deferred_reply()
    {
        var mail = new TaskCompletionSource<SmtpReply>(TaskCreationOptions.RunContinuationsAsynchronously);
        var handler = new RecordingHandler { Mail = _ => new SmtpResponse(mail.Task) };
        await using var conn = await GreetedAsync(handler);
        await conn.SendAsync("MAIL FROM:<a@example.org>\r\nRCPT TO:<bad path>\r\nMAIL FROM:<again@example.org>\r\nRCPT TO:<b@example.org>\r\nNOOP\r\n");
        mail.SetResult(new SmtpReply(250, "2.1.0", "a OK"));
        Assert.Equal(["250 2.1.0 a OK", "501 5.5.4 mailbox must be local-part@domain", "503 5.5.1 Nested MAIL command", "250 2.1.5 Recipient OK", "250 2.0.0 OK"],
            await ReadLinesAsync(conn, 5));
    }

    [Fact]
    public async Task A_failed_deferred_reply_is_451()
    {
        var handler = new RecordingHandler { Mail = _ => new SmtpResponse(Task.FromException<SmtpReply>(new InvalidOperationException("downstream gone"))) };
        await using var conn = await GreetedAsync(handler);
        await conn.SendAsync("MAIL FROM:<a@example.org>\r\n");
        Assert.Equal("451 4.3.0 Local error in processing, try again later", await conn.ReadLineAsync());
        await conn.SendAsync("RCPT TO:<b@example.org>\r\n");
        Assert.Equal("503 5.5.1 Need MAIL before RCPT", await conn.ReadLineAsync());
    }

    [Fact]
    public async Task Handler_throwing_gets_451_and_the_session_goes_on()
    {
        int mailCalls = 0;
        var handler = new RecordingHandler
        {
            Mail = _ => ++mailCalls == 1 ? throw new InvalidOperationException("policy bug") : new SmtpReply(250, "2.1.0", "Sender OK"),
            Rcpt = r => r.Path.LocalPart == "boom" ? throw new InvalidOperationException("policy bug") : new SmtpReply(250, "2.1.5", "Recipient OK"),
        };
        await using var conn = await GreetedAsync(handler);
        await conn.SendAsync("MAIL FROM:<a@example.org>\r\n");
        Assert.Equal("451 4.3.0 Local error in processing, try again later", await conn.ReadLineAsync());
        Assert.Contains("aborted", handler.Events);

        await conn.SendAsync("NOOP\r\n");
        Assert.Equal("250 2.0.0 OK", await conn.ReadLineAsync());
        await conn.SendAsync("MAIL FROM:<a@example.org>\r\n");
        Assert.Equal("250 2.1.0 Sender OK", await conn.ReadLineAsync());
        // A throwing RCPT drops the transaction (ISmtpSessionHandler's contract).
        await conn.SendAsync("RCPT TO:<boom@example.org>\r\n");
        Assert.Equal("451 4.3.0 Local error in processing, try again later", await conn.ReadLineAsync());
        await conn.SendAsync("RCPT TO:<b@example.org>\r\n");
        Assert.Equal("503 5.5.1 Need MAIL before RCPT", await conn.ReadLineAsync());

        handler.Message = _ => throw new InvalidOperationException("scanner bug");
        await conn.SendAsync("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
        Assert.Equal(["250 2.1.0 Sender OK", "250 2.1.5 Recipient OK", "354 End data with <CR><LF>.<CR><LF>"], await ReadLinesAsync(conn, 3));
        await conn.SendAsync("hi\r\n.\r\nNOOP\r\n");
        Assert.Equal(["451 4.3.0 Local error in processing, try again later", "250 2.0.0 OK"], await ReadLinesAsync(conn, 2));
        Assert.Equal(3, handler.Events.Count(e => e == "aborted"));
        // Issue 11.13: the failure reaches the handler's observer, with the transaction it broke.
        Assert.Contains("handler failed at message in a transaction: scanner bug", handler.Events);
        await conn.SendAsync("QUIT\r\n");
        Assert.Equal("221 2.0.0 mx.test closing connection", await conn.ReadLineAsync());
    }

    public static TheoryData<string> HandlerFailures => ["io", "timeout"];

    private static Exception Failure(string kind) => kind == "io"
        ? new IOException("downstream connection reset")
        : new OperationCanceledException("downstream timed out"); // the handler's own timeout, not a shutdown

    [Theory, MemberData(nameof(HandlerFailures))]
    public async Task Handler_failing_with_IO_or_its_own_timeout_is_451_not_a_dropped_connection(string kind)
    {
        bool fail = true;
        var handler = new RecordingHandler
        {
            Mail = _ => fail ? throw Failure(kind) : new SmtpReply(250, "2.1.0", "Sender OK"),
            Rcpt = _ => new SmtpResponse(Task.FromException<SmtpReply>(Failure(kind))),
            Message = _ => throw Failure(kind),
        };
        await using var conn = await GreetedAsync(handler);
        await conn.SendAsync("MAIL FROM:<a@example.org>\r\n");
        Assert.Equal("451 4.3.0 Local error in processing, try again later", await conn.ReadLineAsync());

        fail = false;
        await conn.SendAsync("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n");
        Assert.Equal(["250 2.1.0 Sender OK", "451 4.3.0 Local error in processing, try again later"], await ReadLinesAsync(conn, 2));

        handler.Rcpt = null;
        await conn.SendAsync("RCPT TO:<b@example.org>\r\nDATA\r\n");
        Assert.Equal(["250 2.1.5 Recipient OK", "354 End data with <CR><LF>.<CR><LF>"], await ReadLinesAsync(conn, 2));
        await conn.SendAsync("hi\r\n.\r\nQUIT\r\n");
        Assert.Equal(["451 4.3.0 Local error in processing, try again later", "221 2.0.0 mx.test closing connection"], await ReadLinesAsync(conn, 2));
        Assert.Empty(handler.Messages);
    }

    [Fact]
    public async Task Disconnect_mid_DATA_aborts_the_transaction_and_delivers_nothing()
    {
        var handler = new RecordingHandler();
        var conn = await GreetedAsync(handler);
        await conn.SendAsync("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
        Assert.Equal(3, (await ReadLinesAsync(conn, 3)).Count);
        await conn.SendAsync("Subject: cut short\r\n\r\nhalf a message");
        await conn.DisposeAsync(); // the client vanishes
        await handler.Closed.Task.WaitAsync(LoopbackSession.Patience);
        Assert.Empty(handler.Messages);
        Assert.DoesNotContain("message", handler.Events);
        Assert.Equal(["aborted", "close"], handler.Events.TakeLast(2));
    }

    [Fact]
    public async Task Disconnect_mid_BDAT_aborts_the_transaction_and_delivers_nothing()
    {
        var handler = new RecordingHandler();
        var conn = await GreetedAsync(handler);
        await conn.SendAsync("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nBDAT 100 LAST\r\nonly twenty octets..");
        conn.ShutdownSend(); // a chunk is read in full before anything is answered
        Assert.Equal(["250 2.1.0 Sender OK", "250 2.1.5 Recipient OK", null], await ReadLinesAsync(conn, 3));
        await conn.DisposeAsync();
        await handler.Closed.Task.WaitAsync(LoopbackSession.Patience);
        Assert.Empty(handler.Messages);
        Assert.Equal(["aborted", "close"], handler.Events.TakeLast(2));
    }

    // One heartbeat (SessionHeartbeat) serves every live session: each of several clients that
    // stall at the same time, between commands, inside a command line or inside a BDAT chunk,
    // is timed out on its own and says why.
    [Fact]
    public async Task Every_stalled_session_is_timed_out_by_the_shared_heartbeat()
    {
        var handlers = Enumerable.Range(0, 4).Select(_ => new RecordingHandler()).ToArray();
        var options = Options(command: TimeSpan.FromSeconds(1), data: TimeSpan.FromSeconds(1));
        var conns = new List<LoopbackSession>();
        try
        {
            foreach (var handler in handlers) conns.Add(await GreetedAsync(handler, options));
            await conns[1].SendAsync("MAIL FROM:<a@exa");
            await conns[2].SendAsync("NO");
            await conns[3].SendAsync("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nBDAT 100 LAST\r\nten octets");
            Assert.Equal(["250 2.1.0 Sender OK", "250 2.1.5 Recipient OK"], await ReadLinesAsync(conns[3], 2));
            for (int i = 0; i < 3; i++)
                Assert.Equal("421 4.4.2 mx.test Timeout waiting for command, closing connection", await conns[i].ReadLineAsync());
            Assert.Equal("421 4.4.2 mx.test Timeout waiting for BDAT chunk, closing connection", await conns[3].ReadLineAsync());
            foreach (var conn in conns)
            {
                Assert.Equal("", await conn.ReadToEndAsync());
                await conn.WaitForSessionEndAsync();
            }
            Assert.All(handlers, h => Assert.Empty(h.Messages));
            Assert.Contains("aborted", handlers[3].Events);
        }
        finally
        {
            foreach (var conn in conns) await conn.DisposeAsync();
        }
    }

    // The EHLO extension lines are encoded once per server; a handler that offers something new
    // (DSN once the downstream is known to have it) is heard at the next EHLO, and the new
    // keyword is what MAIL's parameters are checked against.
    [Fact]
    public async Task A_changed_extension_offer_shows_in_the_next_EHLO_and_its_parameters_are_accepted()
    {
        var options = Options();
        var handler = new RecordingHandler();
        await using (var first = await GreetedAsync(handler, options))
        {
            await first.SendAsync("MAIL FROM:<a@example.org> RET=FULL\r\n");
            Assert.Equal("555 5.5.4 Unsupported parameter RET", await first.ReadLineAsync());
        }
        handler.Extensions.Add("DSN");
        await using var second = await LoopbackSession.StartAsync(options, handler);
        Assert.Equal("220 mx.test ESMTP", await second.ReadLineAsync());
        await second.SendAsync("EHLO client.test\r\n");
        var ehlo = new List<string?>();
        do ehlo.Add(await second.ReadLineAsync()); while (ehlo[^1] is { } l && l.StartsWith("250-", StringComparison.Ordinal));
        Assert.Equal("250-mx.test Hello client.test", ehlo[0]);
        Assert.Equal("250-CHUNKING", ehlo[^2]);
        Assert.Equal("250 DSN", ehlo[^1]);
        await second.SendAsync("MAIL FROM:<a@example.org> RET=FULL\r\n");
        Assert.Equal("250 2.1.0 Sender OK", await second.ReadLineAsync());
    }

    [Fact]
    public async Task The_handler_hears_of_content_between_reads_before_the_message_ends()
    {
        var firstPart = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        var handler = new RecordingHandler
        {
            ContentArrived = (_, size) =>
            {
                firstPart.TrySetResult(size);
                return ValueTask.CompletedTask;
            },
        };
        await using var conn = await GreetedAsync(handler);
        await conn.SendAsync("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
        Assert.Equal(["250 2.1.0 Sender OK", "250 2.1.5 Recipient OK", "354 End data with <CR><LF>.<CR><LF>"], await ReadLinesAsync(conn, 3));
        await conn.SendAsync("Subject: x\r\n\r\nfirst part\r\n");
        // The client has not ended the message: only a call between reads can complete this.
        Assert.Equal(26, await firstPart.Task.WaitAsync(LoopbackSession.Patience));
        await conn.SendAsync("second part\r\n.\r\n");
        Assert.Equal("250 2.0.0 Queued as M1", await conn.ReadLineAsync());
        Assert.Equal("Subject: x\r\n\r\nfirst part\r\nsecond part\r\n"u8.ToArray(), handler.Messages.Single());
        Assert.Equal(["content", "arrived 26", "message"], handler.Events.Where(e => e is "content" or "message" || e.StartsWith("arrived", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task A_handler_failing_on_arrived_content_gets_451_at_the_end_and_the_session_goes_on()
    {
        int calls = 0;
        var handler = new RecordingHandler
        {
            ContentArrived = (_, _) =>
            {
                calls++;
                throw new InvalidOperationException("forwarding broke");
            },
        };
        await using var conn = await GreetedAsync(handler);
        await conn.SendAsync("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nBDAT 12\r\nSubject: x\r\n");
        Assert.Equal(["250 2.1.0 Sender OK", "250 2.1.5 Recipient OK", "250 2.0.0 12 octets received"], await ReadLinesAsync(conn, 3));
        await conn.SendAsync("BDAT 8\r\n\r\nbody\r\nBDAT 0 LAST\r\n");
        Assert.Equal("250 2.0.0 8 octets received", await conn.ReadLineAsync());
        Assert.Equal("451 4.3.0 Local error in processing, try again later", await conn.ReadLineAsync());
        await conn.SendAsync("NOOP\r\n");
        Assert.StartsWith("250", await conn.ReadLineAsync());
        Assert.Empty(handler.Messages);
        Assert.Equal(1, calls);   // not asked again once it failed
        Assert.Contains("aborted", handler.Events);
    }
}
