using System.Runtime.InteropServices;

namespace Portcullis.NativeScan.Interop;

// libclamav 1.4 (Debian's libclamav.so.12) as declared in /usr/include/clamav.h: names, enum values and
// struct layouts are taken from that header. Only the 1.4 API is used (no 1.5 *_ex calls).
// Native type mapping for the LP64 Linux targets (x64, arm64): size_t and unsigned long -> nuint,
// off_t -> long, long long -> long, unsigned int -> uint, const char* in -> UTF-8 string.
// Strings libclamav returns (cl_retver, cl_strerror, virus names) are static or engine-owned:
// they come back as byte* and are copied, never freed.
internal static unsafe partial class LibClamAV
{
    private const string Library = "libclamav.so.12";

    internal enum cl_error_t
    {
        CL_CLEAN = 0,
        CL_SUCCESS = 0,
        CL_VIRUS,
        CL_ENULLARG,
        CL_EARG,
        CL_EMALFDB,
        CL_ECVD,
        CL_EVERIFY,
        CL_EUNPACK,

        CL_EOPEN,
        CL_ECREAT,
        CL_EUNLINK,
        CL_ESTAT,
        CL_EREAD,
        CL_ESEEK,
        CL_EWRITE,
        CL_EDUP,
        CL_EACCES,
        CL_ETMPFILE,
        CL_ETMPDIR,
        CL_EMAP,
        CL_EMEM,
        CL_ETIMEOUT,

        CL_BREAK,
        CL_EMAXREC,
        CL_EMAXSIZE,
        CL_EMAXFILES,
        CL_EFORMAT,
        CL_EPARSE,
        CL_EBYTECODE,
        CL_EBYTECODE_TESTFAIL,

        CL_ELOCK,
        CL_EBUSY,
        CL_ESTATE,

        CL_VERIFIED,
        CL_ERROR,

        CL_ELAST_ERROR,
    }

    internal enum cl_engine_field
    {
        CL_ENGINE_MAX_SCANSIZE,
        CL_ENGINE_MAX_FILESIZE,
        CL_ENGINE_MAX_RECURSION,
        CL_ENGINE_MAX_FILES,
        CL_ENGINE_MIN_CC_COUNT,
        CL_ENGINE_MIN_SSN_COUNT,
        CL_ENGINE_PUA_CATEGORIES,
        CL_ENGINE_DB_OPTIONS,
        CL_ENGINE_DB_VERSION,
        CL_ENGINE_DB_TIME,
        CL_ENGINE_AC_ONLY,
        CL_ENGINE_AC_MINDEPTH,
        CL_ENGINE_AC_MAXDEPTH,
        CL_ENGINE_TMPDIR,
        CL_ENGINE_KEEPTMP,
        CL_ENGINE_BYTECODE_SECURITY,
        CL_ENGINE_BYTECODE_TIMEOUT,
        CL_ENGINE_BYTECODE_MODE,
        CL_ENGINE_MAX_EMBEDDEDPE,
        CL_ENGINE_MAX_HTMLNORMALIZE,
        CL_ENGINE_MAX_HTMLNOTAGS,
        CL_ENGINE_MAX_SCRIPTNORMALIZE,
        CL_ENGINE_MAX_ZIPTYPERCG,
        CL_ENGINE_FORCETODISK,
        CL_ENGINE_CACHE_SIZE,
        CL_ENGINE_DISABLE_CACHE,
        CL_ENGINE_DISABLE_PE_STATS,
        CL_ENGINE_STATS_TIMEOUT,
        CL_ENGINE_MAX_PARTITIONS,
        CL_ENGINE_MAX_ICONSPE,
        CL_ENGINE_MAX_RECHWP3,
        CL_ENGINE_MAX_SCANTIME,
        CL_ENGINE_PCRE_MATCH_LIMIT,
        CL_ENGINE_PCRE_RECMATCH_LIMIT,
        CL_ENGINE_PCRE_MAX_FILESIZE,
        CL_ENGINE_DISABLE_PE_CERTS,
        CL_ENGINE_PE_DUMPCERTS,
    }

    internal enum cl_msg
    {
        CL_MSG_INFO_VERBOSE = 32,
        CL_MSG_WARN = 64,
        CL_MSG_ERROR = 128,
    }

    internal const uint CL_INIT_DEFAULT = 0x0;

    internal const uint CL_DB_PHISHING = 0x2;
    internal const uint CL_DB_PHISHING_URLS = 0x8;
    internal const uint CL_DB_BYTECODE = 0x2000;
    internal const uint CL_DB_STDOPT = CL_DB_PHISHING | CL_DB_PHISHING_URLS | CL_DB_BYTECODE;

    internal const uint CL_SCAN_GENERAL_ALLMATCHES = 0x1;
    internal const uint CL_SCAN_GENERAL_COLLECT_METADATA = 0x2;
    internal const uint CL_SCAN_GENERAL_HEURISTICS = 0x4;
    internal const uint CL_SCAN_GENERAL_HEURISTIC_PRECEDENCE = 0x8;
    internal const uint CL_SCAN_GENERAL_UNPRIVILEGED = 0x10;

    internal const uint CL_SCAN_PARSE_ARCHIVE = 0x1;
    internal const uint CL_SCAN_PARSE_ELF = 0x2;
    internal const uint CL_SCAN_PARSE_PDF = 0x4;
    internal const uint CL_SCAN_PARSE_SWF = 0x8;
    internal const uint CL_SCAN_PARSE_HWP3 = 0x10;
    internal const uint CL_SCAN_PARSE_XMLDOCS = 0x20;
    internal const uint CL_SCAN_PARSE_MAIL = 0x40;
    internal const uint CL_SCAN_PARSE_OLE2 = 0x80;
    internal const uint CL_SCAN_PARSE_HTML = 0x100;
    internal const uint CL_SCAN_PARSE_PE = 0x200;
    internal const uint CL_SCAN_PARSE_ONENOTE = 0x400;
    internal const uint CL_SCAN_PARSE_IMAGE = 0x800;
    internal const uint CL_SCAN_PARSE_IMAGE_FUZZY_HASH = 0x1000;

    internal const uint CL_SCAN_HEURISTIC_BROKEN = 0x2;
    internal const uint CL_SCAN_HEURISTIC_EXCEEDS_MAX = 0x4;

    internal const uint CL_SCAN_MAIL_PARTIAL_MESSAGE = 0x1;

    internal const uint LAYER_ATTRIBUTES_DECRYPTED = 0x2;

    [StructLayout(LayoutKind.Sequential)]
    internal struct cl_scan_options
    {
        public uint general;
        public uint parse;
        public uint heuristic;
        public uint mail;
        public uint dev;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct cl_cvd
    {
        public byte* time;
        public uint version;
        public uint sigs;
        public uint fl;
        public byte* md5;
        public byte* dsig;
        public byte* builder;
        public uint stime;
    }

    // STATBUF* is opaque here: only libclamav reads the table it allocates.
    [StructLayout(LayoutKind.Sequential)]
    internal struct cl_stat
    {
        public byte* dir;
        public void* stattab;
        public byte** statdname;
        public uint entries;
    }

    [LibraryImport(Library)]
    internal static partial cl_error_t cl_init(uint initoptions);

    [LibraryImport(Library)]
    internal static partial void cl_set_clcb_msg(delegate* unmanaged[Cdecl]<cl_msg, byte*, byte*, void*, void> callback);

    [LibraryImport(Library)]
    internal static partial byte* cl_retver();

    [LibraryImport(Library)]
    internal static partial byte* cl_strerror(cl_error_t clerror);

    [LibraryImport(Library)]
    internal static partial nint cl_engine_new();

    [LibraryImport(Library)]
    internal static partial cl_error_t cl_engine_free(nint engine);

    [LibraryImport(Library)]
    internal static partial cl_error_t cl_engine_set_num(EngineHandle engine, cl_engine_field field, long num);

    [LibraryImport(Library)]
    internal static partial long cl_engine_get_num(EngineHandle engine, cl_engine_field field, int* err);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial cl_error_t cl_engine_set_str(EngineHandle engine, cl_engine_field field, string str);

    [LibraryImport(Library)]
    internal static partial void cl_engine_set_clcb_virus_found(EngineHandle engine, delegate* unmanaged[Cdecl]<int, byte*, void*, void> callback);

    // clcb_file_inspection: called for every file libclamav is about to scan (the message itself at
    // depth 0, every MIME part, archive member, decompressed stream...), before the clean cache.
    // ancestors has recursion_level entries; names may be NULL. CL_VIRUS blocks, CL_BREAK trusts.
    [LibraryImport(Library)]
    internal static partial void cl_engine_set_clcb_file_inspection(
        EngineHandle engine,
        delegate* unmanaged[Cdecl]<int, byte*, byte**, nuint, byte*, nuint, byte*, uint, uint, void*, cl_error_t> callback);

    // clcb_meta: called for every entry an archive lists (zip, rar, 7z, tar, cab, cpio, MIME attachments
    // saved by the mail parser), extracted or not, with its name and whether it is encrypted.
    [LibraryImport(Library)]
    internal static partial void cl_engine_set_clcb_meta(
        EngineHandle engine,
        delegate* unmanaged[Cdecl]<byte*, nuint, byte*, nuint, int, uint, void*, cl_error_t> callback);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial cl_error_t cl_load(string path, EngineHandle engine, uint* signo, uint dboptions);

    [LibraryImport(Library)]
    internal static partial cl_error_t cl_engine_compile(EngineHandle engine);

    [LibraryImport(Library)]
    internal static partial nint cl_fmap_open_handle(
        void* handle, nuint offset, nuint len, delegate* unmanaged[Cdecl]<void*, void*, nuint, long, long> pread_cb, int use_aging);

    [LibraryImport(Library)]
    internal static partial nint cl_fmap_open_memory(void* start, nuint len);

    [LibraryImport(Library)]
    internal static partial void cl_fmap_close(nint map);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial cl_error_t cl_scanmap_callback(
        FmapHandle map, string? filename, byte** virname, nuint* scanned, EngineHandle engine, cl_scan_options* scanoptions, void* context);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial cl_error_t cl_scandesc_callback(
        int desc, string? filename, byte** virname, nuint* scanned, EngineHandle engine, cl_scan_options* scanoptions, void* context);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial cl_cvd* cl_cvdhead(string file);

    [LibraryImport(Library)]
    internal static partial void cl_cvdfree(cl_cvd* cvd);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial cl_error_t cl_statinidir(string dirname, cl_stat* dbstat);

    [LibraryImport(Library)]
    internal static partial int cl_statchkdir(cl_stat* dbstat);

    [LibraryImport(Library)]
    internal static partial cl_error_t cl_statfree(cl_stat* dbstat);

    internal static string StrError(cl_error_t code) => Utf8(cl_strerror(code)) ?? code.ToString();

    // Copies a static or engine-owned C string; the pointer itself is never freed.
    internal static string? Utf8(byte* text) => text == null ? null : Marshal.PtrToStringUTF8((nint)text);

    internal static void ThrowIfError(cl_error_t code, string what)
    {
        if (code != cl_error_t.CL_SUCCESS)
        {
            throw new ClamAVException(code, what, ClamAV.TakeLastError());
        }
    }
}
