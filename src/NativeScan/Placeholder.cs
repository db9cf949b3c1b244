namespace Portcullis.NativeScan;
