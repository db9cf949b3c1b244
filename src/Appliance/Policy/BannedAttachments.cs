using System.IO.Compression;
using Portcullis.Appliance.Configuration;

namespace Portcullis.Appliance.Policy;

// The attachment rules: a file name whose last extension is banned (Banned.Extension.<ext>), a
// document extension followed by an executable one such as invoice.pdf.exe (Banned.DoubleExtension),
// a banned Content-Type (Banned.ContentType), and, with encrypted_archives = block, a zip archive
// with an encrypted member (Banned.EncryptedArchive), and, listed in banned_types, a file of a
// type libclamav recognises by content whatever its name (Banned.Type.<type>, e.g. Banned.Type.msexe). Names are compared the way Windows opens them:
// case-insensitive, trailing dots and spaces ignored, spaces around the dots ignored.
public sealed class BannedAttachments
{
    public static readonly ValueList<string> DefaultExtensions = new(
        ["exe", "scr", "pif", "com", "bat", "cmd", "vbs", "js", "jse", "wsf", "hta", "msi", "lnk", "iso", "img"]);

    public static readonly ValueList<string> DefaultContentTypes = new(
        ["application/x-msdownload", "application/x-msdos-program", "application/x-dosexec", "application/hta", "application/x-ms-shortcut"]);

    // libclamav 1.4's file type names (libclamav/filetypes.c) without CL_TYPE_, lowercase: what
    // banned_types accepts, so a typo is a configuration error rather than a rule that never fires.
    public static readonly HashSet<string> KnownTypes = new(StringComparer.Ordinal)
    {
        "7z", "7zsfx", "alz", "any", "apm", "arj", "arjsfx", "autoit", "binary_data", "binhex", "bz", "cabsfx",
        "cpio_crc", "cpio_newc", "cpio_odc", "cpio_old", "cryptff", "dmg", "egg", "eggsfx", "elf", "gif", "gpt",
        "graphics", "gz", "html", "html_utf16", "hwp3", "hwpole2", "ignored", "internal", "ishield_msi", "iso9660",
        "java", "jpeg", "lha_lzh", "lnk", "macho", "macho_unibin", "mail", "mbr", "mhtml", "mscab", "mschm", "msexe",
        "msole2", "msszdd", "nulsft", "old_tar", "onenote", "ooxml_hwp", "ooxml_ppt", "ooxml_word", "ooxml_xl",
        "part_any", "part_hfsplus", "pdf", "png", "posix_tar", "ps", "python_compiled", "rar", "rarsfx", "riff", "rtf",
        "screnc", "script", "sfx", "sis", "swf", "text_ascii", "text_utf16be", "text_utf16le", "text_utf8", "tiff",
        "tnef", "udf", "uuencoded", "xar", "xdp", "xml_hwp", "xml_word", "xml_xl", "xz", "zip", "zipsfx",
    };

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

    // What the nested archives of one message may inflate to, all together: a zip's entries may
    // all point at the same compressed data (an overlapping-entry zip bomb), so neither the archive's
    // size nor the entry count bounds the work.
    public const long MaxInflatedBytes = 64L << 20;

    private readonly HashSet<string> _extensions;
    private readonly bool _double;
    private readonly string[] _contentTypes;
    private readonly bool _blockEncrypted;
    private readonly HashSet<string> _types;

    public const string EncryptedArchive = "Banned.EncryptedArchive";

    public BannedAttachments(IEnumerable<string> extensions, bool banDoubleExtensions, IEnumerable<string> contentTypes, EncryptedArchivePolicy encrypted,
        IEnumerable<string>? types = null)
    {
        _types = new HashSet<string>((types ?? []).Select(t => t.ToLowerInvariant()), StringComparer.Ordinal);
        _extensions = new HashSet<string>(extensions.Select(e => e.ToLowerInvariant()), StringComparer.Ordinal);
        _double = banDoubleExtensions;
        _contentTypes = [.. contentTypes.Select(c => c.ToLowerInvariant())];
        _blockEncrypted = encrypted == EncryptedArchivePolicy.Block;
    }

    public static BannedAttachments From(ScanSection scan) =>
        new(scan.BannedExtensions, scan.BanDoubleExtensions, scan.BannedContentTypes, scan.EncryptedArchives, scan.BannedTypes);

    public bool IsEmpty => _extensions.Count == 0 && !_double && _contentTypes.Length == 0 && !_blockEncrypted && _types.Count == 0;

    public bool BlocksEncrypted => _blockEncrypted;

    // Banned.Type.<type> for a libclamav type name without CL_TYPE_ ("MSEXE"), or null.
    public string? CheckType(string? type)
    {
        if (string.IsNullOrEmpty(type) || _types.Count == 0) return null;
        var name = type.ToLowerInvariant();
        return _types.Contains(name) ? "Banned.Type." + name : null;
    }

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

    // Checks the member names of a zip archive (and of zip archives inside it). Only strip uses this,
    // to find which part of a message already found banned holds the detection; the verdict itself
    // comes from libclamav's own unpacking (AttachmentInspector).
    public string? CheckZip(Stream archive)
    {
        long budget = MaxInflatedBytes;
        return CheckZip(archive, ref budget);
    }

    // budget: what nested archives may still inflate to; shared by the archives of one message.
    public string? CheckZip(Stream archive, ref long budget) => CheckZip(archive, 0, ref budget);

    private string? CheckZip(Stream archive, int depth, ref long budget)
    {
        if (depth >= MaxArchiveDepth) return null;
        try
        {
            using var zip = new ZipArchive(archive, ZipArchiveMode.Read, leaveOpen: true);
            var count = 0;
            foreach (var entry in zip.Entries)
            {
                if (++count > MaxArchiveEntries) break;
                if (_blockEncrypted && entry.IsEncrypted) return EncryptedArchive;
                if (CheckFileName(entry.FullName) is { } banned) return banned;
                if (!entry.IsEncrypted && LooksLikeZip(entry.Name, null) && entry.Length <= budget)
                {
                    using var inner = new MemoryStream();
                    using (var source = entry.Open()) budget = CopyAtMost(source, inner, budget);
                    if (budget < 0)
                    {
                        budget = 0; // more than the entry said: what is inside is left to libclamav
                        continue;
                    }

                    inner.Position = 0;
                    if (CheckZip(inner, depth + 1, ref budget) is { } nested) return nested;
                }
            }
        }
        catch (Exception e) when (e is InvalidDataException or IOException or NotSupportedException)
        {
            return null;
        }

        return null;
    }

    // Copies until the source ends; returns the budget left, or -1 when the source had more.
    private static long CopyAtMost(Stream source, Stream destination, long budget)
    {
        var buffer = new byte[81920];
        int n;
        while ((n = source.Read(buffer, 0, (int)Math.Min(buffer.Length, budget + 1))) > 0)
        {
            if (n > budget) return -1;
            destination.Write(buffer, 0, n);
            budget -= n;
        }

        return budget;
    }
}
