using System.Runtime.InteropServices;
using System.Text;
using Portcullis.NativeScan.Interop;

namespace Portcullis.NativeScan;

// A per-scan observer of what libclamav unpacks, called on the scanner thread from inside the scan
// (clcb_file_inspection and clcb_meta), so a policy sees every file in every container libclamav
// understands, in the same pass and within the same limits as the virus scan.
//
// A detection is recorded, not acted on: the scan goes on, so a virus found anywhere in the message
// keeps its signature name, and the verdict is Infected(detection) only when libclamav found nothing
// itself. The engine runs with the clean cache off (see ScanEngine.Load) so a container seen clean
// once is still unpacked, and its members' names checked, the next time.
public abstract class ScanInspector
{
    // The first detection any callback returned; later ones are ignored.
    public string? Detection { get; private set; }

    // A policy that throws makes the scan an error, never a pass.
    public Exception? Failure { get; private set; }

    // Set by InspectFile to end the scan at once (libclamav gets CL_VIRUS): for content the policy
    // already knows libclamav would give up on, before libclamav spends its time and memory on it.
    // A signature that would have matched later is then not named.
    public bool StopScan { get; protected set; }

    // A file libclamav is about to scan. Returns a detection name, or null.
    public abstract string? InspectFile(in EmbeddedFile file);

    // An entry an archive lists (extracted or not). Returns a detection name, or null.
    public abstract string? InspectArchiveEntry(in ArchiveEntry entry);

    internal void Record(string? detection) => Detection ??= detection;

    internal void Fail(Exception e) => Failure ??= e;
}

// What clcb_file_inspection reports. Depth 0 is the scanned object itself (the message). Name is what
// libclamav recorded: a MIME part's filename or name parameter (RFC 2047/2231 decoded), an archive
// member's path, null for a decompressed stream (gzip, bzip2), or a name libclamav made up
// ("attachment" for an unnamed MIME part, "textportion" for a decoded message/rfc822, a
// clamav-*.tmp file for uuencoded content). Type is libclamav's type by magic without CL_TYPE_
// ("MSEXE", "ZIP", "MAIL"). Content is valid only during the call. From the callback, Name and
// Ancestors are decoded from libclamav's strings when read (each read makes new strings), so a
// policy that does not look at them costs nothing.
public readonly unsafe ref struct EmbeddedFile
{
    private readonly string? name;
    private readonly IReadOnlyList<string?>? ancestors;
    private readonly byte* nativeName;
    private readonly byte** nativeAncestors;

    public EmbeddedFile(string? name, string type, int depth, IReadOnlyList<string?> ancestors, ReadOnlySpan<byte> content, bool decrypted)
    {
        this.name = name;
        this.ancestors = ancestors;
        Type = type;
        Depth = depth;
        Content = content;
        Decrypted = decrypted;
    }

    // clcb_file_inspection's file_name and ancestors (depth entries), valid during the callback.
    internal EmbeddedFile(byte* name, string type, int depth, byte** ancestors, ReadOnlySpan<byte> content, bool decrypted)
    {
        nativeName = name;
        nativeAncestors = ancestors;
        Type = type;
        Depth = depth;
        Content = content;
        Decrypted = decrypted;
    }

    public string? Name => nativeName != null ? LibClamAV.Utf8(nativeName) : name;

    // Name as UTF-8 (empty when there is none), to test it without making a string.
    public ReadOnlySpan<byte> NameUtf8 => nativeName != null ? MemoryMarshal.CreateReadOnlySpanFromNullTerminated(nativeName)
        : name is null ? default : Encoding.UTF8.GetBytes(name);

    public string Type { get; }

    public int Depth { get; }

    // The names of the containers above, outermost first (Depth entries; names may be null).
    public IReadOnlyList<string?> Ancestors => ancestors ?? DecodeAncestors();

    public ReadOnlySpan<byte> Content { get; }

    // libclamav had to decrypt a layer above to reach this file.
    public bool Decrypted { get; }

    private string?[] DecodeAncestors()
    {
        if (Depth == 0 || nativeAncestors == null)
        {
            return [];
        }

        var names = new string?[Depth];
        for (var i = 0; i < names.Length; i++)
        {
            names[i] = LibClamAV.Utf8(nativeAncestors[i]);
        }

        return names;
    }
}

// What clcb_meta reports for one archive entry. ContainerType is libclamav's type of the archive
// without CL_TYPE_ ("ZIP", "RAR", "7Z", "POSIX_TAR", "MAIL" for a saved MIME attachment).
public readonly record struct ArchiveEntry(string ContainerType, string? Name, long Size, bool Encrypted);
