using System.IO.Compression;
using Portcullis.Appliance.Configuration;

namespace Portcullis.Appliance.Policy;

// The attachment rules: a file name whose last extension is banned (Banned.Extension.<ext>), a
// document extension followed by an executable one such as invoice.pdf.exe (Banned.DoubleExtension),
// a banned Content-Type (Banned.ContentType), and, with encrypted_archives = block, a zip archive
// with an encrypted member (Banned.EncryptedArchive). Names are compared the way Windows opens them:
// case-insensitive, trailing dots and spaces ignored, spaces around the dots ignored.
public sealed class BannedAttachments
{
    public static readonly ValueList<string> DefaultExtensions = new(
        ["exe", "scr", "pif", "com", "bat", "cmd", "vbs", "js", "jse", "wsf", "hta", "msi", "lnk", "iso", "img"]);

    public static readonly ValueList<string> DefaultContentTypes = new(
        ["application/x-msdownload", "application/x-msdos-program", "application/x-dosexec", "application/hta", "application/x-ms-shortcut"]);

    // The word in banned_extensions that turns the double-extension rule on.
    public const string DoubleWord = "double";

    // What a disguised executable looks like in front of its real extension.
    private static readonly HashSet<string> DocumentExtensions = new(StringComparer.Ordinal)
    {
        "pdf", "doc", "docx", "docm", "xls", "xlsx", "xlsm", "ppt", "pptx", "rtf", "txt", "odt", "ods", "csv",
        "jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "htm", "html", "zip", "rar", "7z", "mp3", "mp4", "avi", "wav",
    };

    // Executable on Windows when double-clicked, whether or not banned_extensions lists them.
    private static readonly HashSet<string> ExecutableExtensions = new(StringComparer.Ordinal)
    {
        "exe", "scr", "pif", "com", "bat", "cmd", "vbs", "vbe", "js", "jse", "wsf", "wsh", "hta", "msi", "lnk", "cpl", "jar", "ps1",
    };

    private const int MaxArchiveDepth = 3;
    private const int MaxArchiveEntries = 10_000;

    private readonly HashSet<string> _extensions;
    private readonly bool _double;
    private readonly string[] _contentTypes;
    private readonly bool _blockEncrypted;

    public BannedAttachments(IEnumerable<string> extensions, bool banDoubleExtensions, IEnumerable<string> contentTypes, EncryptedArchivePolicy encrypted)
    {
        _extensions = new HashSet<string>(extensions.Select(e => e.ToLowerInvariant()), StringComparer.Ordinal);
        _double = banDoubleExtensions;
        _contentTypes = [.. contentTypes.Select(c => c.ToLowerInvariant())];
        _blockEncrypted = encrypted == EncryptedArchivePolicy.Block;
    }

    public static BannedAttachments From(ScanSection scan) =>
        new(scan.BannedExtensions, scan.BanDoubleExtensions, scan.BannedContentTypes, scan.EncryptedArchives);

    public bool IsEmpty => _extensions.Count == 0 && !_double && _contentTypes.Length == 0 && !_blockEncrypted;

    // Banned.<reason> for a file name, or null.
    public string? CheckFileName(string? fileName)
    {
        if (string.IsNullOrWhiteSpace(fileName)) return null;

        // A zip member may carry a path; only the last component is what gets opened.
        var name = fileName.Replace('\\', '/');
        name = name[(name.LastIndexOf('/') + 1)..].TrimEnd('.', ' ', '\t').ToLowerInvariant();
        var parts = name.Split('.').Select(p => p.Trim()).ToArray();
        if (parts.Length < 2) return null;

        var last = parts[^1];
        if (_double && parts.Length >= 3 && DocumentExtensions.Contains(parts[^2]) && ExecutableExtensions.Contains(last))
            return "Banned.DoubleExtension";
        if (_extensions.Contains(last))
            return "Banned.Extension." + last;
        return null;
    }

    // Banned.ContentType for a media type ("type/subtype"; "type/*" in the list matches any subtype), or null.
    public string? CheckContentType(string? mediaType)
    {
        if (string.IsNullOrEmpty(mediaType)) return null;
        var type = mediaType.Trim().ToLowerInvariant();
        foreach (var banned in _contentTypes)
        {
            if (banned == type || (banned.EndsWith("/*", StringComparison.Ordinal) && type.StartsWith(banned[..^1], StringComparison.Ordinal)))
                return "Banned.ContentType";
        }

        return null;
    }

    public static bool LooksLikeZip(string? fileName, string? mediaType) =>
        (fileName?.TrimEnd('.', ' ').EndsWith(".zip", StringComparison.OrdinalIgnoreCase) ?? false)
        || mediaType is not null && (mediaType.Equals("application/zip", StringComparison.OrdinalIgnoreCase)
            || mediaType.Equals("application/x-zip-compressed", StringComparison.OrdinalIgnoreCase));

    // Checks the member names of a zip archive (and of zip archives inside it). An archive that
    // cannot be read is left to libclamav, which has already scanned it.
    public string? CheckZip(Stream archive, int depth = 0)
    {
        if (depth >= MaxArchiveDepth) return null;
        try
        {
            using var zip = new ZipArchive(archive, ZipArchiveMode.Read, leaveOpen: true);
            var count = 0;
            foreach (var entry in zip.Entries)
            {
                if (++count > MaxArchiveEntries) break;
                if (_blockEncrypted && entry.IsEncrypted) return "Banned.EncryptedArchive";
                if (CheckFileName(entry.FullName) is { } banned) return banned;
                if (!entry.IsEncrypted && LooksLikeZip(entry.Name, null) && entry.Length <= 64L << 20)
                {
                    using var inner = new MemoryStream();
                    using (var source = entry.Open()) source.CopyTo(inner);
                    inner.Position = 0;
                    if (CheckZip(inner, depth + 1) is { } nested) return nested;
                }
            }
        }
        catch (Exception e) when (e is InvalidDataException or IOException or NotSupportedException)
        {
            return null;
        }

        return null;
    }
}
