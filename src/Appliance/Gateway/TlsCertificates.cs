// The gateway's own certificate for STARTTLS and /tls listeners ([tls] certificate and key,
// PEM), and how the downstream's certificate is checked ([general] smtp_server_tls_verify,
// smtp_server_ca_file). TLS 1.2 and 1.3 only. Reload() reads the files again (call it on
// SIGHUP); a failed reload keeps the certificate in use.
using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Logging;

namespace Portcullis.Appliance.Gateway;

internal sealed class TlsCertificates
{
    private readonly TlsSection _config;
    private volatile SslServerAuthenticationOptions _options;

    // Throws InvalidDataException naming the files when they cannot be loaded.
    public TlsCertificates(TlsSection config)
    {
        _config = config;
        _options = Load(config);
    }

    public SslServerAuthenticationOptions ServerOptions => _options;

    public string Subject { get; private set; } = "";

    public bool Reload()
    {
        try
        {
            _options = Load(_config);
            Log.Info($"TLS certificate reloaded from {_config.Certificate}");
            return true;
        }
        catch (InvalidDataException e)
        {
            Log.Warn($"TLS certificate not reloaded, keeping the one in use: {e.Message}");
            return false;
        }
    }

    private SslServerAuthenticationOptions Load(TlsSection config)
    {
        X509Certificate2 certificate;
        try
        {
            certificate = X509Certificate2.CreateFromPemFile(config.Certificate, config.Key);
        }
        catch (Exception e) when (e is CryptographicException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            throw new InvalidDataException($"[tls] certificate = {config.Certificate}, key = {config.Key}: cannot load them as a PEM certificate and its private key: {e.Message}", e);
        }
        Subject = certificate.Subject;
        return new SslServerAuthenticationOptions
        {
            ServerCertificateContext = SslStreamCertificateContext.Create(certificate, null, offline: true),
            EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
            ClientCertificateRequired = false,
            EncryptionPolicy = EncryptionPolicy.RequireEncryption,
        };
    }

    // How the gateway checks the downstream server's certificate.
    public static SslClientAuthenticationOptions ClientOptions(GeneralSection general) => ClientOptions(general, general.SmtpServerAddress);

    // The same for one of the servers in smtp_server_address: its name is the one checked.
    public static SslClientAuthenticationOptions ClientOptions(GeneralSection general, string host)
    {
        var options = new SslClientAuthenticationOptions
        {
            TargetHost = host,
            EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
        };
        if (!general.SmtpServerTlsVerify)
        {
            options.RemoteCertificateValidationCallback = static (_, _, _, _) => true;
            return options;
        }
        if (general.SmtpServerCaFile.Length > 0)
        {
            var roots = new X509Certificate2Collection();
            try
            {
                roots.ImportFromPemFile(general.SmtpServerCaFile);
            }
            catch (Exception e) when (e is CryptographicException or IOException or UnauthorizedAccessException)
            {
                throw new InvalidDataException($"[general] smtp_server_ca_file = {general.SmtpServerCaFile}: cannot read PEM certificates: {e.Message}", e);
            }
            if (roots.Count == 0)
                throw new InvalidDataException($"[general] smtp_server_ca_file = {general.SmtpServerCaFile}: no PEM certificate in it");
            options.CertificateChainPolicy = new X509ChainPolicy
            {
                TrustMode = X509ChainTrustMode.CustomRootTrust,
                RevocationMode = X509RevocationMode.NoCheck,
            };
            options.CertificateChainPolicy.CustomTrustStore.AddRange(roots);
        }
        return options;
    }
}
