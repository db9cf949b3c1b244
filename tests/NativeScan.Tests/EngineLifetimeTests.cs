namespace Portcullis.NativeScan.Tests;

// Reference counting of the native engine: disposing (or swapping out) an engine while a scan
// runs on it must let that scan finish, and free the engine right after it.
public sealed class EngineLifetimeTests : IDisposable
{
    private readonly List<string> folders = [];

    [Fact]
    public async Task Engine_disposed_mid_scan_finishes_the_scan_and_is_freed_after_it()
    {
        var engine = Load();
        var source = new GatedSource(SignatureFixture.Eicar);
        var scan = Task.Factory.StartNew(() => engine.Scan(source), TaskCreationOptions.LongRunning);
        await source.Entered;

        engine.Dispose();

        Assert.False(engine.Handle.Released);
        Assert.Throws<ObjectDisposedException>(() => engine.Scan(SignatureFixture.Eicar));
        source.Open();
        ScanEngineTests.AssertInfected(SignatureFixture.EicarSignature, await scan);
        Assert.True(engine.Handle.Released);
    }

    [Fact]
    public async Task Swap_keeps_the_old_engine_for_scans_in_flight_and_new_scans_use_the_new_one()
    {
        var first = Load();
        var second = Load("Portcullis.Test.Eicar.Reloaded");
        using var holder = new EngineHolder(first);
        var source = new GatedSource(SignatureFixture.Eicar);
        var inFlight = Task.Factory.StartNew(
            () =>
            {
                var engine = holder.Retain();
                try
                {
                    return engine.Scan(source);
                }
                finally
                {
                    engine.Release();
                }
            },
            TaskCreationOptions.LongRunning);
        await source.Entered;

        holder.Swap(second);

        Assert.Same(second, holder.Current);
        Assert.False(first.Handle.Released);
        Assert.False(first.Freed.IsCompleted);
        Assert.Equal("Portcullis.Test.Eicar.Reloaded.UNOFFICIAL", holder.Current.Scan(SignatureFixture.Eicar).VirusName);
        source.Open();
        ScanEngineTests.AssertInfected(SignatureFixture.EicarSignature, await inFlight);
        Assert.True(first.Handle.Released);
        await first.Freed.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.False(second.Handle.Released);
    }

    [Fact]
    public void Disposed_holder_frees_its_engine_and_refuses_swaps()
    {
        var engine = Load();
        var holder = new EngineHolder(engine);

        holder.Dispose();

        Assert.True(engine.Handle.Released);
        Assert.Throws<ObjectDisposedException>(() => holder.Swap(Load()));
        Assert.Throws<ObjectDisposedException>(() => holder.Retain());
    }

    public void Dispose()
    {
        foreach (var folder in folders)
        {
            SignatureFixture.DeleteFolder(folder);
        }
    }

    private ScanEngine Load(string? eicarName = null)
    {
        var folder = SignatureFixture.WriteFolder();
        folders.Add(folder);
        if (eicarName is not null)
        {
            var ndb = Path.Combine(folder, "portcullis-test.ndb");
            File.WriteAllText(ndb, File.ReadAllText(ndb).Replace(SignatureFixture.EicarSignature, eicarName, StringComparison.Ordinal));
        }

        return ScanEngine.Load(new EngineOptions(folder));
    }
}
