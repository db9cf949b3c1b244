namespace Portcullis.NativeScan.Tests;

// The bounded scanner pool. Scans are held in flight with GatedSource, so "busy" and "queued"
// states are reached deterministically, never by sleeping.
public sealed class ScannerPoolTests : IClassFixture<SignatureFixture>, IDisposable
{
    private static readonly TimeSpan Generous = TimeSpan.FromSeconds(30);
    private readonly EngineHolder holder;
    private readonly List<GatedSource> gates = [];

    public ScannerPoolTests(SignatureFixture fixture)
    {
        // The holder owns its engine: a private one, so disposing it leaves the fixture's alone.
        holder = new EngineHolder(ScanEngine.Load(new EngineOptions(fixture.Folder)));
    }

    [Fact]
    public async Task Scans_run_on_named_scanner_threads()
    {
        using var pool = new ScannerPool(holder, threadCount: 2, queueCapacity: 4);
        var source = Gate(SignatureFixture.Eicar);
        source.Open();

        Assert.True(pool.TryEnqueue(source, "eicar.com", Generous, out var ticket));

        ScanEngineTests.AssertInfected(SignatureFixture.EicarSignature, await ticket.Result);
        await ticket.Finished;
        Assert.StartsWith("scanner-", source.ReaderThread);
    }

    [Fact]
    public async Task A_job_of_several_scans_holds_one_thread_and_ends_at_one_deadline()
    {
        using var pool = new ScannerPool(holder, threadCount: 1, queueCapacity: 0);
        using var release = new ManualResetEventSlim();
        var tokenCancelled = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        Assert.True(pool.TryEnqueue((engine, deadline) =>
        {
            var first = engine.Scan(SignatureFixture.Eicar);
            entered.SetResult();
            release.Wait();
            tokenCancelled.SetResult(deadline.IsCancellationRequested);
            return first;
        }, TimeSpan.FromMilliseconds(200), out var ticket));
        await entered.Task.WaitAsync(Generous);

        // The job holds the only thread: the next scan waits for it; the job's verdict is the
        // deadline's, and it has not let go of the thread yet.
        var next = Gate(SignatureFixture.Eicar);
        Assert.True(pool.TryEnqueue(next, null, Generous, out var waiting));
        Assert.Equal(1, pool.Busy);
        Assert.Equal(1, pool.QueueDepth);
        var verdict = await ticket.Result.WaitAsync(Generous);
        Assert.True(verdict.IsTimeout);
        Assert.False(ticket.Finished.IsCompleted);

        release.Set();
        await ticket.Finished.WaitAsync(Generous);
        Assert.True(await tokenCancelled.Task, "the job saw its deadline pass");
        next.Open();
        ScanEngineTests.AssertInfected(SignatureFixture.EicarSignature, await waiting.Result.WaitAsync(Generous));
    }

    [Fact]
    public async Task A_jobs_token_is_its_own_when_the_thread_runs_the_next_job()
    {
        using var pool = new ScannerPool(holder, threadCount: 1, queueCapacity: 0);
        var leftoverCalled = false;

        // Leaves a registration behind on its token, and ends before its deadline.
        Assert.True(pool.TryEnqueue((engine, deadline) =>
        {
            deadline.Register(() => leftoverCalled = true);
            return ScanResult.Clean;
        }, Generous, out var registers));
        Assert.Equal(ScanResult.Clean, await registers.Result.WaitAsync(Generous));
        await registers.Finished.WaitAsync(Generous);

        // Runs until its deadline cancels the token.
        Assert.True(pool.TryEnqueue((engine, deadline) =>
        {
            deadline.WaitHandle.WaitOne(Generous);
            return ScanResult.Infected(deadline.IsCancellationRequested ? "cancelled" : "never cancelled");
        }, TimeSpan.FromMilliseconds(50), out var expires));
        Assert.True((await expires.Result.WaitAsync(Generous)).IsTimeout);
        await expires.Finished.WaitAsync(Generous);
        Assert.False(leftoverCalled, "a finished job's registration ran at another job's deadline");

        // The same thread, after a timeout: a token not cancelled.
        Assert.True(pool.TryEnqueue((engine, deadline) =>
            deadline.IsCancellationRequested ? ScanResult.Error(-1, "cancelled already") : ScanResult.Clean, Generous, out var next));
        Assert.Equal(ScanResult.Clean, await next.Result.WaitAsync(Generous));
    }

    [Fact]
    public async Task A_shorter_deadline_queued_later_still_comes_first()
    {
        using var pool = new ScannerPool(holder, threadCount: 1, queueCapacity: 0);
        pool.Hold();
        Assert.True(pool.TryEnqueue(Gate(SignatureFixture.Eicar), null, Generous, out var slow));
        Assert.True(pool.TryEnqueue(Gate(SignatureFixture.Eicar), null, TimeSpan.FromMilliseconds(50), out var quick));

        Assert.True((await quick.Result.WaitAsync(Generous)).IsTimeout);
        Assert.False(slow.Result.IsCompleted);
    }

    [Fact]
    public async Task Without_a_cap_a_burst_waits_for_the_scanners_and_every_message_is_scanned()
    {
        using var pool = new ScannerPool(holder, threadCount: 2, queueCapacity: 0);
        var running = new[] { Gate(SignatureFixture.Eicar), Gate(SignatureFixture.Eicar) };
        var tickets = new List<ScanTicket>();
        foreach (var source in running)
        {
            Assert.True(pool.TryEnqueue(source, null, Generous, out var ticket));
            tickets.Add(ticket);
        }

        await Task.WhenAll(running.Select(r => r.Entered));

        // 200 more than the threads can take: all admitted, none answered until a scanner frees up.
        for (var i = 0; i < 200; i++)
        {
            var waiting = Gate(SignatureFixture.Eicar);
            waiting.Open();
            Assert.True(pool.TryEnqueue(waiting, null, Generous, out var ticket), $"message {i} refused");
            tickets.Add(ticket);
        }

        Assert.Equal(2, pool.Busy);
        Assert.Equal(200, pool.QueueDepth);
        Assert.All(tickets, t => Assert.False(t.Result.IsCompleted));

        foreach (var source in running)
        {
            source.Open();
        }

        foreach (var ticket in tickets)
        {
            ScanEngineTests.AssertInfected(SignatureFixture.EicarSignature, await ticket.Result);
            await ticket.Finished;
        }

        Assert.Equal(0, pool.QueueDepth);
        Assert.Equal(202, pool.FinishedCount);
    }

    [Fact]
    public void Negative_queue_capacity_is_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new ScannerPool(holder, threadCount: 1, queueCapacity: -1));
    }

    [Fact]
    public async Task A_queue_capacity_above_zero_is_a_hard_cap()
    {
        using var pool = new ScannerPool(holder, threadCount: 1, queueCapacity: 1);
        var running = Gate(SignatureFixture.Eicar);
        var queued = Gate(SignatureFixture.Eicar);

        Assert.True(pool.TryEnqueue(running, null, Generous, out var first));
        await running.Entered;
        Assert.True(pool.TryEnqueue(queued, null, Generous, out var second));

        Assert.Equal(1, pool.Busy);
        Assert.Equal(1, pool.QueueDepth);
        Assert.False(pool.TryEnqueue(Gate(SignatureFixture.Eicar), null, Generous, out _));

        running.Open();
        queued.Open();
        ScanEngineTests.AssertInfected(SignatureFixture.EicarSignature, await first.Result);
        ScanEngineTests.AssertInfected(SignatureFixture.EicarSignature, await second.Result);
        await Task.WhenAll(first.Finished, second.Finished);
    }

    [Fact]
    public async Task Timeout_answers_first_and_finished_waits_for_the_scanner()
    {
        using var pool = new ScannerPool(holder, threadCount: 1, queueCapacity: 1);
        var source = Gate(SignatureFixture.Eicar);

        Assert.True(pool.TryEnqueue(source, null, TimeSpan.FromMilliseconds(100), out var ticket));
        var result = await ticket.Result;

        Assert.Equal(ScanOutcome.Error, result.Outcome);
        Assert.True(result.IsTimeout);
        Assert.Equal("scan timed out after 0.1s", result.ErrorText);
        // The scanner is still inside the source: the caller must not free the buffer yet.
        await source.Entered;
        Assert.False(ticket.Finished.IsCompleted);

        source.Open();
        await ticket.Finished;
        Assert.Equal(result, await ticket.Result);
    }

    [Fact]
    public async Task Job_that_timed_out_in_the_queue_is_not_scanned()
    {
        using var pool = new ScannerPool(holder, threadCount: 1, queueCapacity: 1);
        var running = Gate(SignatureFixture.Eicar);
        var waiting = Gate(SignatureFixture.Eicar);
        Assert.True(pool.TryEnqueue(running, null, Generous, out var first));
        await running.Entered;

        Assert.True(pool.TryEnqueue(waiting, null, TimeSpan.FromMilliseconds(50), out var second));
        var result = await second.Result;
        Assert.True(result.IsTimeout);
        // The whole timeout went on waiting for a scanner, and the reason says so.
        Assert.Equal("no scanner became free within the scan timeout of 0.05s", result.ErrorText);
        Assert.False(second.Finished.IsCompleted);  // still queued: the scanner has not let go of it

        running.Open();
        await Task.WhenAll(first.Finished, second.Finished);
        Assert.False(waiting.Entered.IsCompleted);
    }

    [Fact]
    public async Task Held_pool_lets_queued_messages_time_out_as_waiting_for_a_scanner()
    {
        using var pool = new ScannerPool(holder, threadCount: 1, queueCapacity: 0);
        pool.Hold();
        var waiting = Gate(SignatureFixture.Eicar);
        waiting.Open();

        Assert.True(pool.TryEnqueue(waiting, null, TimeSpan.FromMilliseconds(50), out var ticket));
        var result = await ticket.Result;

        Assert.True(result.IsTimeout);
        Assert.StartsWith("no scanner became free", result.ErrorText, StringComparison.Ordinal);
        pool.Resume();
        await ticket.Finished;
        Assert.False(waiting.Entered.IsCompleted);
    }

    [Fact]
    public async Task Dispose_cancels_queued_jobs_and_lets_the_running_one_finish()
    {
        var pool = new ScannerPool(holder, threadCount: 1, queueCapacity: 2);
        var running = Gate(SignatureFixture.Eicar);
        Assert.True(pool.TryEnqueue(running, null, Generous, out var first));
        await running.Entered;
        Assert.True(pool.TryEnqueue(Gate(SignatureFixture.Eicar), null, Generous, out var second));

        var disposing = Task.Factory.StartNew(pool.Dispose, TaskCreationOptions.LongRunning);

        Assert.Equal(ScanResult.Error(34, "shutting down"), await second.Result); // CL_ERROR
        await second.Finished;
        Assert.False(disposing.IsCompleted);
        Assert.False(pool.TryEnqueue(Gate(SignatureFixture.Eicar), null, Generous, out _));
        running.Open();
        await disposing;
        ScanEngineTests.AssertInfected(SignatureFixture.EicarSignature, await first.Result);
        Assert.True(first.Finished.IsCompleted);
    }

    [Fact]
    public async Task Spill_file_scans_through_its_descriptor()
    {
        using var pool = new ScannerPool(holder, threadCount: 1, queueCapacity: 1);
        var path = Path.Combine(Path.GetTempPath(), $"portcullis-spill-{Guid.NewGuid():N}.eml");
        File.WriteAllBytes(path, Messages.Bytes(Messages.WithAttachment(File.ReadAllBytes(SignatureFixture.ClamExePath), "clam.exe")));
        try
        {
            using var file = File.OpenHandle(path);

            Assert.True(pool.TryEnqueue(file, "spill.eml", Generous, out var ticket));

            ScanEngineTests.AssertInfected(SignatureFixture.ClamExeSignature, await ticket.Result);
            await ticket.Finished;
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public async Task Each_job_uses_the_engine_current_when_it_starts()
    {
        using var pool = new ScannerPool(holder, threadCount: 1, queueCapacity: 1);
        var before = holder.Current;
        var source = Gate(SignatureFixture.Eicar);
        Assert.True(pool.TryEnqueue(source, null, Generous, out var first));
        await source.Entered;

        var folder = SignatureFixture.WriteFolder();
        try
        {
            var ndb = Path.Combine(folder, "portcullis-test.ndb");
            File.WriteAllText(ndb, File.ReadAllText(ndb).Replace(SignatureFixture.EicarSignature, "Portcullis.Test.Eicar.Next", StringComparison.Ordinal));
            holder.Swap(ScanEngine.Load(new EngineOptions(folder)));
        }
        finally
        {
            SignatureFixture.DeleteFolder(folder);
        }

        var next = Gate(SignatureFixture.Eicar);
        next.Open();
        Assert.True(pool.TryEnqueue(next, null, Generous, out var second));
        source.Open();

        ScanEngineTests.AssertInfected(SignatureFixture.EicarSignature, await first.Result);
        Assert.Equal("Portcullis.Test.Eicar.Next.UNOFFICIAL", (await second.Result).VirusName);
        await Task.WhenAll(first.Finished, second.Finished);
        Assert.True(before.Handle.Released);
    }

    [Fact]
    public async Task Hold_keeps_queued_jobs_waiting_until_resume()
    {
        using var pool = new ScannerPool(holder, threadCount: 2, queueCapacity: 2);
        var running = Gate(SignatureFixture.Eicar);
        Assert.True(pool.TryEnqueue(running, null, Generous, out var first));
        await running.Entered;

        pool.Hold();
        Assert.True(pool.IsHeld);
        var held = Gate(SignatureFixture.Eicar);
        held.Open();
        Assert.True(pool.TryEnqueue(held, null, Generous, out var second));
        var idle = pool.WhenIdleAsync();
        Assert.False(idle.IsCompleted);

        // The running scan ends; the queued one has not started although a thread is free.
        running.Open();
        await first.Finished;
        await idle;
        Assert.Equal(1, pool.QueueDepth);
        Assert.False(second.Result.IsCompleted);

        pool.Resume();
        ScanEngineTests.AssertInfected(SignatureFixture.EicarSignature, await second.Result);
        await second.Finished;
        Assert.True(pool.FinishedCount >= 2);
    }

    [Fact]
    public async Task Scans_without_an_engine_fail_and_a_swap_brings_scanning_back()
    {
        using var pool = new ScannerPool(holder, threadCount: 1, queueCapacity: 1);
        var old = holder.Unload();
        Assert.NotNull(old);
        Assert.False(holder.IsLoaded);
        await old!.Freed;

        var none = Gate(SignatureFixture.Eicar);
        none.Open();
        Assert.True(pool.TryEnqueue(none, null, Generous, out var failed));
        Assert.Equal(ScanOutcome.Error, (await failed.Result).Outcome);

        holder.Swap(ScanEngine.Load(old.Options));
        var again = Gate(SignatureFixture.Eicar);
        again.Open();
        Assert.True(pool.TryEnqueue(again, null, Generous, out var ok));
        ScanEngineTests.AssertInfected(SignatureFixture.EicarSignature, await ok.Result);
    }

    public void Dispose()
    {
        // Never leave a scanner thread parked on a gate when a test fails half way.
        foreach (var gate in gates)
        {
            gate.Open();
        }

        holder.Dispose();
    }

    private GatedSource Gate(byte[] content)
    {
        var gate = new GatedSource(content);
        gates.Add(gate);
        return gate;
    }
}
