using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;
using Portcullis.NativeScan.Interop;
using static Portcullis.NativeScan.Interop.LibClamAV;

namespace Portcullis.NativeScan;

// One compiled libclamav engine. Scans run synchronously on the calling thread and may run on
// many threads at once (a compiled engine is read-only). Dispose is safe while scans are in
// flight: the engine handle is reference-counted and freed when the last scan returns.
public sealed unsafe class ScanEngine : IDisposable
{
    private readonly EngineHandle engine;
    private readonly cl_scan_options scanOptions;

    // SafeHandle.Dispose leaves DangerousAddRef working while references are outstanding, so a
    // disposed engine would otherwise keep accepting new scans for as long as one is in flight.
    private volatile bool disposed;

    private ScanEngine(EngineHandle engine, EngineOptions options, uint signatureCount, string databaseVersion, DateTimeOffset? databaseTime)
    {
        this.engine = engine;
        Options = options;
        SignatureCount = signatureCount;
        DatabaseVersion = databaseVersion;
        DatabaseTime = databaseTime;
        scanOptions = new cl_scan_options
        {
            // ALLMATCHES stays off: the first signature decides, as a gateway needs.
            general = CL_SCAN_GENERAL_HEURISTICS,
            parse = CL_SCAN_PARSE_ARCHIVE | CL_SCAN_PARSE_ELF | CL_SCAN_PARSE_PDF | CL_SCAN_PARSE_SWF
                | CL_SCAN_PARSE_HWP3 | CL_SCAN_PARSE_XMLDOCS | CL_SCAN_PARSE_MAIL | CL_SCAN_PARSE_OLE2
                | CL_SCAN_PARSE_HTML | CL_SCAN_PARSE_PE | CL_SCAN_PARSE_ONENOTE | CL_SCAN_PARSE_IMAGE
                | CL_SCAN_PARSE_IMAGE_FUZZY_HASH,
            // Always on: libclamav 1.4 reports a scan stopped by CL_ENGINE_MAX_SCANTIME only as the
            // Heuristics.Limits.Exceeded.MaxScanTime alert (otherwise CL_CLEAN). Verdict() maps it to
            // a timeout error and drops the other limit alerts unless AlertExceedsMax is set.
            // A signature that matched before a limit was reached still decides the verdict.
            heuristic = CL_SCAN_HEURISTIC_EXCEEDS_MAX,
        };
    }

    public uint SignatureCount { get; }

    public string DatabaseVersion { get; }

    public DateTimeOffset? DatabaseTime { get; }

    public EngineOptions Options { get; }

    internal EngineHandle Handle => engine;

    // Completes when the native engine has been freed: after Dispose, once the last scan on it ended.
    public Task Freed => engine.Freed;

    public static ScanEngine Load(EngineOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        ClamAV.Initialize();

        var folder = Path.GetFullPath(options.DatabaseFolder);
        if (!Directory.Exists(folder))
        {
            throw new ClamAVException((int)cl_error_t.CL_EOPEN, $"signature folder {folder} does not exist");
        }

        var engine = new EngineHandle(cl_engine_new());
        if (engine.IsInvalid)
        {
            throw new ClamAVException(cl_error_t.CL_EMEM, "cl_engine_new", null);
        }

        try
        {
            ClamAV.TakeLastError();
            SetNumber(engine, cl_engine_field.CL_ENGINE_MAX_SCANSIZE, options.MaxScanSize);
            SetNumber(engine, cl_engine_field.CL_ENGINE_MAX_FILESIZE, options.MaxFileSize);
            SetNumber(engine, cl_engine_field.CL_ENGINE_MAX_RECURSION, options.MaxRecursion);
            SetNumber(engine, cl_engine_field.CL_ENGINE_MAX_FILES, options.MaxFiles);
            SetNumber(engine, cl_engine_field.CL_ENGINE_MAX_SCANTIME, options.ScanTimeoutMilliseconds);
            // The clean cache stays off. libclamav 1.4 (scanners.c, cli_magic_scan) runs the
            // file-inspection callback for a layer before its cache lookup, but a layer found in the
            // cache is not unpacked: its members never reach the callbacks. The policy records a
            // detection without failing libclamav's verdict (so a virus keeps its name), so a zip whose
            // member was banned is still cached clean, and the next message carrying it passes. No
            // configuration makes the policy content-only at every depth: Banned.MalformedMime checks
            // each embedded message whatever the rules (ScanInspectorTests shows the miss with the
            // cache on). With every message different (docs/PERFORMANCE.md) the cache would only save
            // repeated attachments (logos, signatures) anyway.
            if (!options.CleanCache)
            {
                SetNumber(engine, cl_engine_field.CL_ENGINE_DISABLE_CACHE, 1);
            }
            if (options.TempFolder is not null)
            {
                ThrowIfError(cl_engine_set_str(engine, cl_engine_field.CL_ENGINE_TMPDIR, options.TempFolder), "setting CL_ENGINE_TMPDIR");
            }

            // cl_scanmap_callback fills virname for a too-large top-level map only when this is set.
            cl_engine_set_clcb_virus_found(engine, &OnVirusFound);
            cl_engine_set_clcb_file_inspection(engine, &OnFileInspection);
            cl_engine_set_clcb_meta(engine, &OnArchiveEntry);

            uint signatures = 0;
            ThrowIfError(cl_load(folder, engine, &signatures, CL_DB_STDOPT), $"loading signatures from {folder}");
            if (signatures == 0)
            {
                throw new ClamAVException((int)cl_error_t.CL_EMALFDB, $"no signatures in {folder}");
            }

            ThrowIfError(cl_engine_compile(engine), $"compiling signatures from {folder}");

            var (version, time) = SignatureFolder.Describe(folder);
            return new ScanEngine(engine, options with { DatabaseFolder = folder }, signatures, version, time);
        }
        catch
        {
            engine.Dispose();
            throw;
        }
    }

    // Scans content read through the source's pread-style Read; the message is never copied whole.
    public ScanResult Scan(IScanSource source, string? name = null) => Scan(source, name, null);

    // inspector: sees every file libclamav unpacks during this scan (see ScanInspector).
    public ScanResult Scan(IScanSource source, string? name, ScanInspector? inspector)
    {
        ArgumentNullException.ThrowIfNull(source);
        ObjectDisposedException.ThrowIf(disposed, this);
        var length = source.Length;
        if (length == 0)
        {
            return ScanResult.Clean;
        }

        var reader = new SourceReader(source);
        var target = GCHandle.Alloc(reader);
        var map = cl_fmap_open_handle((void*)GCHandle.ToIntPtr(target), 0, (nuint)length, &ReadSource, use_aging: 0);
        if (map == 0)
        {
            target.Free();
            return ScanResult.Error((int)cl_error_t.CL_EMAP, "cl_fmap_open_handle failed");
        }

        ScanResult verdict;
        using (var fmap = new FmapHandle(map, target))
        {
            verdict = ScanMap(fmap, name, inspector);
        }

        // libclamav 1.4 skips pages it could not read and may still answer CL_CLEAN:
        // unread content is never clean.
        if (verdict.Outcome == ScanOutcome.Clean && reader.Failure is { } failure)
        {
            return ScanResult.Error((int)cl_error_t.CL_EREAD, $"reading the message failed: {failure.Message}");
        }

        return verdict;
    }

    // Scans bytes already in memory (a single MIME part); they stay pinned for the scan.
    public ScanResult Scan(ReadOnlySpan<byte> data, string? name = null)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (data.IsEmpty)
        {
            return ScanResult.Clean;
        }

        fixed (byte* start = data)
        {
            var map = cl_fmap_open_memory(start, (nuint)data.Length);
            if (map == 0)
            {
                return ScanResult.Error((int)cl_error_t.CL_EMAP, "cl_fmap_open_memory failed");
            }

            // Closed before the fixed block ends, so libclamav never sees unpinned memory.
            using var fmap = new FmapHandle(map, default);
            return ScanMap(fmap, name, null);
        }
    }

    // Scans an open file (a spilled message) through its descriptor; libclamav reads it with pread.
    public ScanResult ScanFile(SafeFileHandle file, string? name = null) => ScanFile(file, name, null);

    public ScanResult ScanFile(SafeFileHandle file, string? name, ScanInspector? inspector)
    {
        ArgumentNullException.ThrowIfNull(file);
        ObjectDisposedException.ThrowIf(disposed, this);
        var fileAdded = false;
        var engineAdded = false;
        var context = inspector is null ? default : GCHandle.Alloc(inspector);
        try
        {
            file.DangerousAddRef(ref fileAdded);
            engine.DangerousAddRef(ref engineAdded);
            var descriptor = (int)file.DangerousGetHandle();
            byte* virname = null;
            nuint scanned = 0;
            var options = scanOptions;
            var code = cl_scandesc_callback(descriptor, name, &virname, &scanned, engine, &options, ContextOf(context));
            return Verdict(code, virname, inspector);
        }
        finally
        {
            if (context.IsAllocated)
            {
                context.Free();
            }

            if (engineAdded)
            {
                engine.DangerousRelease();
            }

            if (fileAdded)
            {
                file.DangerousRelease();
            }
        }
    }

    public ScanResult ScanFile(string path)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        return ScanFile(file, path);
    }

    public void Dispose()
    {
        disposed = true;
        engine.Dispose();
    }

    // Takes a reference for a caller that picked this engine from an EngineHolder; false once disposed.
    internal bool TryRetain()
    {
        if (disposed)
        {
            return false;
        }

        var added = false;
        try
        {
            engine.DangerousAddRef(ref added);
        }
        catch (ObjectDisposedException)
        {
        }

        // Disposed between the check and the AddRef: give the reference back.
        if (added && disposed)
        {
            engine.DangerousRelease();
            return false;
        }

        return added;
    }

    internal void Release() => engine.DangerousRelease();

    private ScanResult ScanMap(FmapHandle map, string? name, ScanInspector? inspector)
    {
        // The virus name points into the engine's memory: hold the engine until it is copied,
        // not only for the duration of the native call.
        var added = false;
        var context = inspector is null ? default : GCHandle.Alloc(inspector);
        try
        {
            engine.DangerousAddRef(ref added);
            byte* virname = null;
            nuint scanned = 0;
            var options = scanOptions;
            var code = cl_scanmap_callback(map, name, &virname, &scanned, engine, &options, ContextOf(context));
            return Verdict(code, virname, inspector);
        }
        finally
        {
            if (context.IsAllocated)
            {
                context.Free();
            }

            if (added)
            {
                engine.DangerousRelease();
            }
        }
    }

    private const string LimitsExceeded = "Heuristics.Limits.Exceeded.";
    private const string ByCallback = "Detected.By.Callback";
    private const string ScanTimeExceeded = "Heuristics.Limits.Exceeded.MaxScanTime";

    private static void* ContextOf(GCHandle context) => context.IsAllocated ? (void*)GCHandle.ToIntPtr(context) : null;

    // Precedence: a signature libclamav matched, then the inspector's detection (definite even when
    // a limit or the time ran out later), then a limit, then clean. An inspector that failed makes
    // the scan an error unless a signature matched.
    private ScanResult Verdict(cl_error_t code, byte* virname, ScanInspector? inspector)
    {
        var name = code == cl_error_t.CL_VIRUS ? Utf8(virname) ?? "unnamed" : null;
        // "Detected.By.Callback*" is libclamav's name for a callback's CL_VIRUS, not a signature.
        var signature = name is not null && !name.StartsWith(LimitsExceeded, StringComparison.Ordinal)
            && !name.StartsWith(ByCallback, StringComparison.Ordinal);
        if (!signature && inspector is not null)
        {
            if (inspector.Detection is { } detection)
            {
                return ScanResult.Infected(detection);
            }

            if (inspector.Failure is { } failure)
            {
                return ScanResult.Error((int)cl_error_t.CL_ERROR, $"attachment policy failed: {failure.Message}");
            }
        }

        switch (code)
        {
            case cl_error_t.CL_CLEAN:
                return ScanResult.Clean;
            case cl_error_t.CL_VIRUS:
                if (name!.StartsWith(ScanTimeExceeded, StringComparison.Ordinal))
                {
                    return ScanResult.Error(ScanResult.TimeoutCode, $"{StrError(cl_error_t.CL_ETIMEOUT)}: scan time limit of {Options.ScanTimeout.TotalSeconds:0.###}s exceeded");
                }

                if (!Options.AlertExceedsMax && !signature)
                {
                    // Passed as the admin chose, but the caller can still log which limit was hit.
                    return ScanResult.Clean with { SkippedLimit = name };
                }

                return ScanResult.Infected(name);
            default:
                return ScanResult.Error((int)code, StrError(code));
        }
    }

    private static void SetNumber(EngineHandle engine, cl_engine_field field, long value) =>
        ThrowIfError(cl_engine_set_num(engine, field, value), $"setting {field} to {value}");

    [UnmanagedCallersOnly(CallConvs = new[] { typeof(CallConvCdecl) })]
    private static void OnVirusFound(int descriptor, byte* virname, void* context)
    {
    }

    // clcb_file_inspection. Always CL_CLEAN: the inspector records, the scan goes on (see ScanInspector).
    [UnmanagedCallersOnly(CallConvs = new[] { typeof(CallConvCdecl) })]
    private static cl_error_t OnFileInspection(int fd, byte* type, byte** ancestors, nuint parentSize, byte* fileName,
        nuint fileSize, byte* fileBuffer, uint recursionLevel, uint layerAttributes, void* context)
    {
        if (context == null)
        {
            return cl_error_t.CL_CLEAN;
        }

        var inspector = (ScanInspector)GCHandle.FromIntPtr((nint)context).Target!;
        try
        {
            // file_buffer is the whole file, mapped by libclamav for this call (NULL if it could not be).
            // The names stay libclamav's until the inspector reads them.
            var content = fileBuffer == null ? default : new ReadOnlySpan<byte>(fileBuffer, checked((int)fileSize));
            var file = new EmbeddedFile(fileName, TypeName(type), (int)recursionLevel, ancestors, content,
                (layerAttributes & LAYER_ATTRIBUTES_DECRYPTED) != 0);
            inspector.Record(inspector.InspectFile(file));
        }
        catch (Exception e)
        {
            inspector.Fail(e);
        }

        return inspector.StopScan ? cl_error_t.CL_VIRUS : cl_error_t.CL_CLEAN;
    }

    // clcb_meta. Always CL_CLEAN, as above.
    [UnmanagedCallersOnly(CallConvs = new[] { typeof(CallConvCdecl) })]
    private static cl_error_t OnArchiveEntry(byte* containerType, nuint containerSize, byte* fileName, nuint realSize,
        int isEncrypted, uint position, void* context)
    {
        if (context == null)
        {
            return cl_error_t.CL_CLEAN;
        }

        var inspector = (ScanInspector)GCHandle.FromIntPtr((nint)context).Target!;
        try
        {
            inspector.Record(inspector.InspectArchiveEntry(new ArchiveEntry(TypeName(containerType), Utf8(fileName), (long)realSize, isEncrypted != 0)));
        }
        catch (Exception e)
        {
            inspector.Fail(e);
        }

        return cl_error_t.CL_CLEAN;
    }

    // libclamav has a few dozen type names and reports them for every file of every scan: each is
    // made once and kept (copy on write; a race loses an entry, never a name).
    private static string[] typeNames = [];

    private static string TypeName(byte* type)
    {
        if (type == null) return "ANY";
        var name = MemoryMarshal.CreateReadOnlySpanFromNullTerminated(type);
        if (name.StartsWith("CL_TYPE_"u8)) name = name[8..];
        var known = Volatile.Read(ref typeNames);
        foreach (var candidate in known)
        {
            if (Ascii.Equals(name, candidate)) return candidate;
        }

        var made = Encoding.UTF8.GetString(name);
        if (known.Length < 128 && Ascii.IsValid(name)) Volatile.Write(ref typeNames, [.. known, made]);
        return made;
    }

    // clcb_pread: fills buffer from the IScanSource behind the GCHandle. libclamav treats a short
    // read as a failed page, so keep reading until count bytes or the end of the source.
    [UnmanagedCallersOnly(CallConvs = new[] { typeof(CallConvCdecl) })]
    private static long ReadSource(void* handle, void* buffer, nuint count, long offset)
    {
        SourceReader? reader = null;
        try
        {
            reader = (SourceReader)GCHandle.FromIntPtr((nint)handle).Target!;
            var source = reader.Source;
            var destination = (byte*)buffer;
            long total = 0;
            while ((ulong)total < count)
            {
                var chunk = (int)Math.Min((ulong)count - (ulong)total, int.MaxValue);
                var read = source.Read(offset + total, new Span<byte>(destination + total, chunk));
                if (read == 0)
                {
                    // libclamav asked only for bytes below Length: the source is shorter than it said.
                    reader.Failure ??= new EndOfStreamException($"{source.GetType().Name} ended at {offset + total} of {source.Length} bytes");
                    break;
                }

                if (read < 0 || read > chunk)
                {
                    throw new InvalidOperationException($"{source.GetType().Name}.Read returned {read} for {chunk} bytes");
                }

                total += read;
            }

            return total;
        }
        catch (Exception e)
        {
            // A managed exception must not unwind through libclamav; -1 is pread's failure.
            if (reader is not null)
            {
                reader.Failure ??= e;
            }

            return -1;
        }
    }

    // What the GCHandle behind an fmap points at: the source, and the first read failure.
    private sealed class SourceReader(IScanSource source)
    {
        public IScanSource Source { get; } = source;

        public Exception? Failure { get; set; }
    }
}
